package appinsightsexporter

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
)

func TestDefaultConfig(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, componenttest.CheckConfigStruct(cfg))

	require.Empty(t, string(cfg.ConnectionString))
	require.Equal(t, 10*time.Second, cfg.TimeoutConfig.Timeout)
	require.Equal(t, 47*time.Hour, cfg.MaxAge)

	require.True(t, cfg.BackOffConfig.Enabled)
	require.Equal(t, time.Second, cfg.BackOffConfig.InitialInterval)
	require.Equal(t, 60*time.Second, cfg.BackOffConfig.MaxInterval)
	require.Zero(t, cfg.BackOffConfig.MaxElapsedTime)

	require.True(t, cfg.QueueSettings.HasValue())
	q := cfg.QueueSettings.Get()
	require.Equal(t, exporterhelper.RequestSizerTypeBytes, q.Sizer)
	require.EqualValues(t, 64<<20, q.QueueSize)
	require.Equal(t, 2, q.NumConsumers)
	require.False(t, q.BlockOnOverflow)
	require.Nil(t, q.StorageID)
	require.True(t, q.Batch.HasValue())
	b := q.Batch.Get()
	require.Equal(t, 200*time.Millisecond, b.FlushTimeout)
	require.Equal(t, exporterhelper.RequestSizerTypeBytes, b.Sizer)
	require.EqualValues(t, 256<<10, b.MinSize)
	require.EqualValues(t, 1<<20, b.MaxSize)
	require.NoError(t, q.Validate())
	require.NoError(t, b.Validate())

	// Without a connection string the default configuration is incomplete.
	require.ErrorContains(t, cfg.Validate(), "connection_string is required")
	cfg.ConnectionString = configopaque.String("InstrumentationKey=" + testIKey)
	require.NoError(t, cfg.Validate())
}

func TestConfigUnmarshal(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	conf := confmap.NewFromStringMap(map[string]any{
		"connection_string": "InstrumentationKey=" + testIKey,
		"timeout":           "3s",
		"max_age":           "12h",
		"retry_on_failure":  map[string]any{"initial_interval": "2s"},
		"sending_queue": map[string]any{
			"queue_size": 1024,
			"storage":    "file_storage/queue",
		},
	})
	require.NoError(t, conf.Unmarshal(cfg))
	require.Equal(t, testIKey, strings.TrimPrefix(string(cfg.ConnectionString), "InstrumentationKey="))
	require.Equal(t, 3*time.Second, cfg.TimeoutConfig.Timeout)
	require.Equal(t, 12*time.Hour, cfg.MaxAge)
	require.Equal(t, 2*time.Second, cfg.BackOffConfig.InitialInterval)
	require.Equal(t, 60*time.Second, cfg.BackOffConfig.MaxInterval, "unset keys keep their defaults")
	require.EqualValues(t, 1024, cfg.QueueSettings.Get().QueueSize)
	require.Equal(t, "file_storage/queue", cfg.QueueSettings.Get().StorageID.String())
	require.NoError(t, cfg.Validate())
}

func TestConnectionStringParsing(t *testing.T) {
	for _, tc := range []struct {
		name, cs, url string
	}{
		{"default endpoint", "InstrumentationKey=" + testIKey, "https://dc.services.visualstudio.com/v2.1/track"},
		{"endpoint with slash", "InstrumentationKey=" + testIKey + ";IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/", "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track"},
		{"endpoint without slash", "InstrumentationKey=" + testIKey + ";IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com", "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track"},
		{"endpoint with a path", "InstrumentationKey=" + testIKey + ";IngestionEndpoint=http://127.0.0.1:8080/proxy/", "http://127.0.0.1:8080/proxy/v2.1/track"},
		{"endpoint suffix", "InstrumentationKey=" + testIKey + ";EndpointSuffix=applicationinsights.azure.cn", "https://dc.applicationinsights.azure.cn/v2.1/track"},
		{"ingestion endpoint wins over suffix", "EndpointSuffix=applicationinsights.azure.cn;IngestionEndpoint=https://x.example/;InstrumentationKey=" + testIKey, "https://x.example/v2.1/track"},
		{"keys are case-insensitive, spaces and empty segments ignored", " instrumentationkey = " + testIKey + " ; INGESTIONENDPOINT=https://y.example ;; LiveEndpoint=https://live.example/;", "https://y.example/v2.1/track"},
		{"unknown keys ignored", "Foo=bar;InstrumentationKey=" + testIKey + ";Authorization=ikey", "https://dc.services.visualstudio.com/v2.1/track"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := parseConnectionString(tc.cs)
			require.NoError(t, err)
			require.Equal(t, testIKey, info.instrumentationKey)
			require.Equal(t, tc.url, info.trackURL)
		})
	}
}

func TestValidateErrorsNeverHoldTheSecret(t *testing.T) {
	const secretish = "s3cr3t-v4lue-that-must-not-leak"
	validCS := "InstrumentationKey=" + testIKey
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"missing", func(c *Config) { c.ConnectionString = "" }, "connection_string is required"},
		{"no key", func(c *Config) { c.ConnectionString = "IngestionEndpoint=https://" + secretish + ".example/" }, "InstrumentationKey is required"},
		{"key not a GUID", func(c *Config) { c.ConnectionString = configopaque.String("InstrumentationKey=" + secretish) }, "not a GUID"},
		{"bare key", func(c *Config) { c.ConnectionString = testIKey }, "not of the form key=value"},
		{"segment without =", func(c *Config) { c.ConnectionString = configopaque.String(validCS + ";" + secretish) }, "segment 2"},
		{"empty key", func(c *Config) { c.ConnectionString = configopaque.String(validCS + ";=" + secretish) }, "empty key"},
		{"duplicate key", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS + ";instrumentationKey=" + testIKey)
		}, "InstrumentationKey is given more than once"},
		{"endpoint not http", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS + ";IngestionEndpoint=ftp://" + secretish)
		}, "IngestionEndpoint"},
		{"endpoint with credentials", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS + ";IngestionEndpoint=https://user:" + secretish + "@x.example/")
		}, "IngestionEndpoint"},
		{"endpoint unparsable", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS + ";IngestionEndpoint=https://%zz" + secretish)
		}, "IngestionEndpoint"},
		{"suffix with a path", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS + ";EndpointSuffix=" + secretish + "/x")
		}, "EndpointSuffix"},
		{"entra id", func(c *Config) { c.ConnectionString = configopaque.String(validCS + ";Authorization=AAD") }, "Authorization"},
		{"max_age zero", func(c *Config) { c.ConnectionString = configopaque.String(validCS); c.MaxAge = 0 }, "max_age must be greater than 0"},
		{"max_elapsed_time set", func(c *Config) {
			c.ConnectionString = configopaque.String(validCS)
			c.BackOffConfig.MaxElapsedTime = time.Hour
		}, "max_elapsed_time must be 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			tc.mutate(cfg)
			err := cfg.Validate()
			require.ErrorContains(t, err, tc.want)
			msg := strings.ToLower(err.Error())
			require.NotContains(t, msg, secretish)
			require.NotContains(t, msg, testIKey)
			if cs := string(cfg.ConnectionString); cs != "" {
				require.NotContains(t, err.Error(), cs)
			}
		})
	}
}
