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
	attrSignal        = "signal"
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

// counters are the exporter's truthful item counts. Every count also goes
// to the delivery report when there is one: both are fed by the same record
// calls, so they cannot disagree.
type counters struct {
	exporterID string
	// signal is the pipeline signal of this exporter instance (traces, logs,
	// metrics): a span's events become TRACE or EXCEPTION items like a log
	// record's, so the telemetry type alone does not tell a signal.
	signal    string
	succeeded metric.Int64Counter
	dropped   metric.Int64Counter
	retried   metric.Int64Counter
	// report is nil when delivery_report is off.
	report *deliveryReport
}

func newCounters(mp metric.MeterProvider, exporterID, signal string, report *deliveryReport) (*counters, error) {
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
	return &counters{exporterID: exporterID, signal: signal, succeeded: succeeded, dropped: dropped, retried: retried, report: report}, nil
}

// itemClass is what items are counted by: their telemetry type and, for
// requests and dependencies, what the application recorded about the
// operation. The Prometheus counters ignore the latter; the delivery report
// gives it as telemetry_success on dropped items, as the SDKs do.
type itemClass struct {
	typ envelope.TelemetryType
	app appOutcome
}

// appOutcome is the "success" a request or dependency envelope carries.
type appOutcome uint8

const (
	appUnknown appOutcome = iota
	appSucceeded
	appFailed
)

// typeCounts counts entries per class.
type typeCounts map[itemClass]int64

func countTypes(entries []entry) typeCounts {
	tc := typeCounts{}
	for _, e := range entries {
		tc[itemClass{typ: e.typ, app: outcomeOf(e)}]++
	}
	return tc
}

func outcomeOf(e entry) appOutcome {
	if e.typ != envelope.Request && e.typ != envelope.Dependency {
		return appUnknown
	}
	switch ok, known := envelope.RecordedSuccess(e.json); {
	case !known:
		return appUnknown
	case ok:
		return appSucceeded
	default:
		return appFailed
	}
}

func (c *counters) record(inst metric.Int64Counter, codeKey, code string, tc typeCounts) {
	for cl, n := range tc {
		if n == 0 {
			continue
		}
		attrs := []attribute.KeyValue{
			attribute.String(attrExporter, c.exporterID),
			attribute.String(attrSignal, c.signal),
			attribute.String(attrTelemetryType, string(cl.typ)),
		}
		if codeKey != "" {
			attrs = append(attrs, attribute.String(codeKey, code))
		}
		// The context of the data may be cancelled already: counts must not
		// depend on it. Two classes of one type add to the same series.
		inst.Add(context.Background(), n, metric.WithAttributes(attrs...))
	}
}

func (c *counters) recordSucceeded(tc typeCounts) {
	c.record(c.succeeded, "", "", tc)
	c.report.addSucceeded(tc)
}

func (c *counters) recordDropped(code string, tc typeCounts) {
	c.recordDroppedBecause(code, "", tc)
}

// recordDroppedBecause is recordDropped with the reason the delivery report
// gives (drop.reason) where the code alone does not tell it: a local
// CLIENT_EXCEPTION. Empty: the reason follows from the code.
func (c *counters) recordDroppedBecause(code, reason string, tc typeCounts) {
	c.record(c.dropped, attrDropCode, code, tc)
	c.report.addDropped(code, reason, tc)
}

func (c *counters) recordRetried(code string, tc typeCounts) {
	c.record(c.retried, attrRetryCode, code, tc)
	c.report.addRetried(code, tc)
}
