package envelope

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const testIKey = "00000000-0000-0000-0000-000000000001"

var (
	testStart = time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC)
	testEnd   = testStart.Add(1500 * time.Millisecond)
	traceID   = pcommon.TraceID{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}
	spanID    = pcommon.SpanID{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}
	parentID  = pcommon.SpanID{0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8}
)

const (
	traceHex  = "0102030405060708090a0b0c0d0e0f10"
	spanHex   = "a1a2a3a4a5a6a7a8"
	parentHex = "b1b2b3b4b5b6b7b8"
	startStr  = "2024-05-01T10:00:00.1234567Z"
)

func ts(t time.Time) pcommon.Timestamp { return pcommon.NewTimestampFromTime(t) }

// fillResource sets the resource attributes most tests share.
func fillResource(r pcommon.Resource) {
	a := r.Attributes()
	a.PutStr("service.name", "checkout")
	a.PutStr("service.namespace", "shop")
	a.PutStr("service.instance.id", "pod-1")
	a.PutStr("service.version", "1.2.3")
	a.PutStr("tenant.id", "t01")
}

// newSpan returns a span in a fresh Traces with the shared resource, with
// ids, times and kind set.
func newSpan(kind ptrace.SpanKind, name string) (ptrace.Traces, ptrace.Span) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	fillResource(rs.Resource())
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetName(name)
	s.SetKind(kind)
	s.SetTraceID(traceID)
	s.SetSpanID(spanID)
	s.SetParentSpanID(parentID)
	s.SetStartTimestamp(ts(testStart))
	s.SetEndTimestamp(ts(testEnd))
	return td, s
}

func newLog() (plog.Logs, plog.LogRecord) {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	fillResource(rl.Resource())
	lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	lr.SetTimestamp(ts(testStart))
	return ld, lr
}

func newMetric(name string) (pmetric.Metrics, pmetric.Metric) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	fillResource(rm.Resource())
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	return md, m
}

// decode checks the envelope invariants every item must satisfy and returns
// the JSON as a map.
func decode(t *testing.T, it Item) map[string]any {
	t.Helper()
	require.True(t, json.Valid(it.JSON), "invalid JSON: %s", it.JSON)
	require.NotContains(t, string(it.JSON), "\n", "compact JSON expected")
	var m map[string]any
	require.NoError(t, json.Unmarshal(it.JSON, &m))
	require.EqualValues(t, 1, m["ver"])
	require.NotEmpty(t, m["name"])
	tm, ok := m["time"].(string)
	require.True(t, ok)
	_, err := time.Parse(time.RFC3339Nano, tm)
	require.NoError(t, err, "time %q", tm)
	data := m["data"].(map[string]any)
	require.NotEmpty(t, data["baseType"])
	require.EqualValues(t, 2, data["baseData"].(map[string]any)["ver"])
	require.Equal(t, "telemux-otelcol:1.0", m["tags"].(map[string]any)["ai.internal.sdkVersion"])

	// Name, base type and item type agree.
	want := map[TelemetryType][2]string{
		Request:      {"Microsoft.ApplicationInsights.Request", "RequestData"},
		Dependency:   {"Microsoft.ApplicationInsights.RemoteDependency", "RemoteDependencyData"},
		Trace:        {"Microsoft.ApplicationInsights.Message", "MessageData"},
		Exception:    {"Microsoft.ApplicationInsights.Exception", "ExceptionData"},
		CustomEvent:  {"Microsoft.ApplicationInsights.Event", "EventData"},
		CustomMetric: {"Microsoft.ApplicationInsights.Metric", "MetricData"},
	}[it.Type]
	require.Equal(t, want[0], m["name"])
	require.Equal(t, want[1], data["baseType"])
	return m
}

func baseData(m map[string]any) map[string]any {
	return m["data"].(map[string]any)["baseData"].(map[string]any)
}

func tagsOf(m map[string]any) map[string]any { return m["tags"].(map[string]any) }

func propsOf(m map[string]any) map[string]any {
	p, _ := baseData(m)["properties"].(map[string]any)
	return p
}

// one converts and requires exactly one item.
func one(t *testing.T, items []Item) (Item, map[string]any) {
	t.Helper()
	require.Len(t, items, 1)
	return items[0], decode(t, items[0])
}
