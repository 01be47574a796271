package appinsightsexporter

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
)

// Config is the configuration of the telemux_appinsights exporter.
type Config struct {
	// ConnectionString is the Application Insights connection string
	// ("InstrumentationKey=...;IngestionEndpoint=https://..."). It is a secret:
	// configopaque keeps it out of logs and no error message repeats it.
	ConnectionString configopaque.String `mapstructure:"connection_string"`

	// TimeoutConfig bounds one HTTP attempt (key: timeout).
	TimeoutConfig exporterhelper.TimeoutConfig `mapstructure:",squash"`

	// BackOffConfig drives the retries of retryable failures. max_elapsed_time
	// must stay 0: data is given up by max_age instead, so that every expired
	// item is counted as dropped.
	BackOffConfig configretry.BackOffConfig `mapstructure:"retry_on_failure"`

	// QueueSettings is the exporterhelper sending queue (with optional
	// persistent storage and batching).
	QueueSettings configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`

	// MaxAge is how long an item may wait (in the queue, across restarts and
	// retries) before it is dropped with drop_code CLIENT_EXPIRED. The
	// ingestion service refuses items older than 48 hours.
	MaxAge time.Duration `mapstructure:"max_age"`

	// DeliveryReport, when the section is present, sends this exporter's
	// delivery statistics (items succeeded, dropped, retried) to its own
	// Application Insights resource, as the Azure Monitor SDKs' "SDK stats"
	// do. Off when absent.
	DeliveryReport configoptional.Optional[DeliveryReportConfig] `mapstructure:"delivery_report"`
}

// DeliveryReportConfig is the delivery_report section.
type DeliveryReportConfig struct {
	// Interval is how often the statistics are sent: each report carries
	// the counts of the interval that just ended (15m, the SDKs' default).
	Interval time.Duration `mapstructure:"interval"`
}

// minReportInterval is the shortest interval accepted, the SDKs' minimum.
const minReportInterval = time.Second

// Validate checks the section when it is present (configoptional validates
// the section only then).
func (c *DeliveryReportConfig) Validate() error {
	if c.Interval < minReportInterval {
		return fmt.Errorf("interval must be at least %s, got %s", minReportInterval, c.Interval)
	}
	return nil
}

const (
	defaultIngestionEndpoint = "https://dc.services.visualstudio.com/"
	trackPath                = "v2.1/track"
	maxConnectionStringLen   = 4096
)

// connectionInfo is the parsed form of a connection string.
type connectionInfo struct {
	instrumentationKey string
	// trackURL is the ingestion endpoint joined with v2.1/track.
	trackURL string
}

// Validate checks the configuration. No error it returns contains the
// connection string or any part of it.
func (cfg *Config) Validate() error {
	var errs []error
	if _, err := parseConnectionString(string(cfg.ConnectionString)); err != nil {
		errs = append(errs, err)
	}
	if cfg.MaxAge <= 0 {
		errs = append(errs, errors.New("max_age must be greater than 0"))
	}
	if cfg.BackOffConfig.Enabled && cfg.BackOffConfig.MaxElapsedTime != 0 {
		errs = append(errs, errors.New("retry_on_failure::max_elapsed_time must be 0: this exporter gives up on data by max_age, which counts what it drops"))
	}
	return errors.Join(errs...)
}

// parseConnectionString parses a `;`-separated list of key=value pairs with
// case-insensitive keys. Errors name the offending key or the position of the
// segment, never a value.
func parseConnectionString(cs string) (connectionInfo, error) {
	if strings.TrimSpace(cs) == "" {
		return connectionInfo{}, errors.New("connection_string is required")
	}
	if len(cs) > maxConnectionStringLen {
		return connectionInfo{}, fmt.Errorf("connection_string is longer than %d characters", maxConnectionStringLen)
	}
	values := map[string]string{}
	for i, segment := range strings.Split(cs, ";") {
		segment = strings.TrimSpace(segment)
		if segment == "" {
			continue
		}
		key, value, ok := strings.Cut(segment, "=")
		if !ok {
			return connectionInfo{}, fmt.Errorf("connection_string: segment %d is not of the form key=value", i+1)
		}
		key = strings.ToLower(strings.TrimSpace(key))
		if key == "" {
			return connectionInfo{}, fmt.Errorf("connection_string: segment %d has an empty key", i+1)
		}
		name, known := knownKeys[key]
		if !known {
			// Unknown keys are ignored, and never printed: one may be a
			// pasted secret.
			continue
		}
		if _, dup := values[key]; dup {
			return connectionInfo{}, fmt.Errorf("connection_string: %s is given more than once", name)
		}
		values[key] = strings.TrimSpace(value)
	}

	var info connectionInfo
	info.instrumentationKey = values["instrumentationkey"]
	if info.instrumentationKey == "" {
		return connectionInfo{}, errors.New("connection_string: InstrumentationKey is required")
	}
	if !isGUID(info.instrumentationKey) {
		return connectionInfo{}, errors.New("connection_string: InstrumentationKey is not a GUID")
	}

	if auth := values["authorization"]; auth != "" && !strings.EqualFold(auth, "ikey") {
		return connectionInfo{}, errors.New("connection_string: Authorization other than ikey (Microsoft Entra ID) is not supported")
	}

	endpoint := values["ingestionendpoint"]
	if endpoint == "" {
		if suffix := strings.Trim(values["endpointsuffix"], "./ "); suffix != "" {
			if strings.ContainsAny(suffix, "/:?#@ ") {
				return connectionInfo{}, errors.New("connection_string: EndpointSuffix must be a DNS suffix such as applicationinsights.azure.cn")
			}
			endpoint = "https://dc." + suffix + "/"
		} else {
			endpoint = defaultIngestionEndpoint
		}
	}
	trackURL, err := buildTrackURL(endpoint)
	if err != nil {
		return connectionInfo{}, err
	}
	info.trackURL = trackURL
	return info, nil
}

var knownKeys = map[string]string{
	"instrumentationkey": "InstrumentationKey",
	"ingestionendpoint":  "IngestionEndpoint",
	"endpointsuffix":     "EndpointSuffix",
	"liveendpoint":       "LiveEndpoint",
	"profilerendpoint":   "ProfilerEndpoint",
	"snapshotendpoint":   "SnapshotEndpoint",
	"applicationid":      "ApplicationId",
	"authorization":      "Authorization",
	"location":           "Location",
}

// buildTrackURL joins an ingestion endpoint ("https://host/" or
// "https://host/prefix") with v2.1/track, whether or not it ends with a slash.
func buildTrackURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		// The url package's error repeats the input: do not wrap it.
		return "", errors.New("connection_string: IngestionEndpoint is not an absolute http(s) URL without credentials")
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + trackPath
	u.RawPath = ""
	u.Fragment = ""
	return u.String(), nil
}

// isGUID reports whether s has the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
// with hexadecimal digits.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
