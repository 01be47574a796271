package appinsightsexporter

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

const (
	meterName = "telemux.io/collector/appinsightsexporter"

	metricSucceeded = "telemux_appinsights_items_succeeded"
	metricDropped   = "telemux_appinsights_items_dropped"
	metricRetried   = "telemux_appinsights_items_retried"

	attrExporter      = "exporter"
	attrTelemetryType = "telemetry_type"
	attrDropCode      = "drop_code"
	attrRetryCode     = "retry_code"

	// Codes of telemux's own (not HTTP statuses).

	// codePersistenceCapacity: the sending queue was full and refused the data.
	codePersistenceCapacity = "CLIENT_PERSISTENCE_CAPACITY"
	// codeExpired: the item waited longer than max_age.
	codeExpired = "CLIENT_EXPIRED"
	// codeException: a local failure (a network error as retry_code, an
	// unrecoverable local error as drop_code).
	codeException = "CLIENT_EXCEPTION"
	// codeTimeout: the attempt timed out.
	codeTimeout = "CLIENT_TIMEOUT"

	// unknownType is the telemetry_type of items of a stored request that
	// could not be decoded.
	unknownType = "UNKNOWN"
)

// counters are the exporter's truthful item counts.
type counters struct {
	exporterID string
	succeeded  metric.Int64Counter
	dropped    metric.Int64Counter
	retried    metric.Int64Counter
}

func newCounters(mp metric.MeterProvider, exporterID string) (*counters, error) {
	m := mp.Meter(meterName)
	succeeded, err1 := m.Int64Counter(metricSucceeded, metric.WithUnit("{item}"),
		metric.WithDescription("Items the Application Insights ingestion service accepted."))
	dropped, err2 := m.Int64Counter(metricDropped, metric.WithUnit("{item}"),
		metric.WithDescription("Items the exporter will never send again, by drop_code: the HTTP status that refused them, or CLIENT_PERSISTENCE_CAPACITY, CLIENT_EXPIRED, CLIENT_EXCEPTION, CLIENT_TIMEOUT."))
	retried, err3 := m.Int64Counter(metricRetried, metric.WithUnit("{item}"),
		metric.WithDescription("Items whose sending failed and that will be sent again, by retry_code: the HTTP status, CLIENT_EXCEPTION or CLIENT_TIMEOUT."))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	return &counters{exporterID: exporterID, succeeded: succeeded, dropped: dropped, retried: retried}, nil
}

// typeCounts counts entries per telemetry type.
type typeCounts map[envelope.TelemetryType]int64

func countTypes(entries []entry) typeCounts {
	tc := typeCounts{}
	for _, e := range entries {
		tc[e.typ]++
	}
	return tc
}

func (c *counters) record(inst metric.Int64Counter, codeKey, code string, tc typeCounts) {
	for t, n := range tc {
		if n == 0 {
			continue
		}
		attrs := []attribute.KeyValue{
			attribute.String(attrExporter, c.exporterID),
			attribute.String(attrTelemetryType, string(t)),
		}
		if codeKey != "" {
			attrs = append(attrs, attribute.String(codeKey, code))
		}
		// The context of the data may be cancelled already: counts must not
		// depend on it.
		inst.Add(context.Background(), n, metric.WithAttributes(attrs...))
	}
}

func (c *counters) recordSucceeded(tc typeCounts) { c.record(c.succeeded, "", "", tc) }

func (c *counters) recordDropped(code string, tc typeCounts) {
	c.record(c.dropped, attrDropCode, code, tc)
}

func (c *counters) recordRetried(code string, tc typeCounts) {
	c.record(c.retried, attrRetryCode, code, tc)
}
