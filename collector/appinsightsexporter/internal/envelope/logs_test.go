package envelope

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
)

func TestLogToMessage(t *testing.T) {
	ld, lr := newLog()
	lr.Body().SetStr("user logged in: marker-42")
	lr.SetSeverityNumber(plog.SeverityNumberWarn)
	lr.SetSeverityText("WARN")
	lr.SetTraceID(traceID)
	lr.SetSpanID(spanID)
	lr.Attributes().PutStr("log.marker", "l1")
	lr.Attributes().PutStr("service.name", "log-wins")

	it, m := one(t, FromLogs(ld, testIKey))
	require.Equal(t, Trace, it.Type)
	require.Contains(t, string(it.JSON), `"tenant.id":"t01"`)
	require.Equal(t, startStr, m["time"])
	require.Equal(t, testIKey, m["iKey"])
	bd := baseData(m)
	require.Equal(t, "user logged in: marker-42", bd["message"])
	require.EqualValues(t, 2, bd["severityLevel"])
	tg := tagsOf(m)
	require.Equal(t, traceHex, tg["ai.operation.id"])
	require.Equal(t, spanHex, tg["ai.operation.parentId"])
	require.Equal(t, "shop.checkout", tg["ai.cloud.role"], "tags come from the resource, not the record")
	p := propsOf(m)
	require.Equal(t, "l1", p["log.marker"])
	require.Equal(t, "log-wins", p["service.name"])
	require.Equal(t, "t01", p["tenant.id"])
}

func TestLogSeverity(t *testing.T) {
	tests := []struct {
		sev  plog.SeverityNumber
		want any // nil: field left out
	}{
		{plog.SeverityNumberUnspecified, nil},
		{plog.SeverityNumberTrace, 0.0},
		{plog.SeverityNumberTrace4, 0.0},
		{plog.SeverityNumberDebug, 0.0},
		{plog.SeverityNumberDebug4, 0.0},
		{plog.SeverityNumberInfo, 1.0},
		{plog.SeverityNumberInfo4, 1.0},
		{plog.SeverityNumberWarn, 2.0},
		{plog.SeverityNumberWarn4, 2.0},
		{plog.SeverityNumberError, 3.0},
		{plog.SeverityNumberError4, 3.0},
		{plog.SeverityNumberFatal, 4.0},
		{plog.SeverityNumberFatal4, 4.0},
		{plog.SeverityNumber(99), nil},
	}
	for _, tt := range tests {
		t.Run(tt.sev.String(), func(t *testing.T) {
			ld, lr := newLog()
			lr.Body().SetStr("m")
			lr.SetSeverityNumber(tt.sev)
			_, m := one(t, FromLogs(ld, testIKey))
			bd := baseData(m)
			if tt.want == nil {
				require.NotContains(t, bd, "severityLevel")
			} else {
				require.Equal(t, tt.want, bd["severityLevel"])
			}
		})
	}
}

func TestLogBodies(t *testing.T) {
	tests := []struct {
		name string
		set  func(lr plog.LogRecord)
		want string
	}{
		{"string", func(lr plog.LogRecord) { lr.Body().SetStr("hello") }, "hello"},
		{"int", func(lr plog.LogRecord) { lr.Body().SetInt(42) }, "42"},
		{"map", func(lr plog.LogRecord) { lr.Body().SetEmptyMap().PutStr("marker", "m1") }, `{"marker":"m1"}`},
		{"empty", func(plog.LogRecord) {}, "n/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ld, lr := newLog()
			tt.set(lr)
			_, m := one(t, FromLogs(ld, testIKey))
			require.Equal(t, tt.want, baseData(m)["message"])
		})
	}
}

func TestLogToException(t *testing.T) {
	tests := []struct {
		name    string
		attrs   map[string]any
		body    string
		sev     plog.SeverityNumber
		wantExc map[string]any
		wantSev float64
	}{
		{
			name:    "full",
			attrs:   map[string]any{"exception.type": "ValueError", "exception.message": "bad", "exception.stacktrace": "Traceback..."},
			sev:     plog.SeverityNumberFatal,
			wantExc: map[string]any{"typeName": "ValueError", "message": "bad", "hasFullStack": true, "stack": "Traceback..."},
			wantSev: 4,
		},
		{
			name:    "type only, body becomes the message, error by default",
			attrs:   map[string]any{"exception.type": "IOError"},
			body:    "disk gone",
			wantExc: map[string]any{"typeName": "IOError", "message": "disk gone", "hasFullStack": false},
			wantSev: 3,
		},
		{
			name:    "message only",
			attrs:   map[string]any{"exception.message": "oops"},
			sev:     plog.SeverityNumberWarn,
			wantExc: map[string]any{"typeName": "n/a", "message": "oops", "hasFullStack": false},
			wantSev: 2,
		},
		{
			name:    "present but empty",
			attrs:   map[string]any{"exception.type": ""},
			wantExc: map[string]any{"typeName": "n/a", "message": "n/a", "hasFullStack": false},
			wantSev: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ld, lr := newLog()
			require.NoError(t, lr.Attributes().FromRaw(tt.attrs))
			if tt.body != "" {
				lr.Body().SetStr(tt.body)
			}
			lr.SetSeverityNumber(tt.sev)
			lr.SetTraceID(traceID)
			lr.SetSpanID(spanID)
			it, m := one(t, FromLogs(ld, testIKey))
			require.Equal(t, Exception, it.Type)
			bd := baseData(m)
			require.Equal(t, []any{tt.wantExc}, bd["exceptions"])
			require.Equal(t, tt.wantSev, bd["severityLevel"])
			require.Equal(t, traceHex, tagsOf(m)["ai.operation.id"])
			require.Equal(t, spanHex, tagsOf(m)["ai.operation.parentId"])
			require.Equal(t, "t01", propsOf(m)["tenant.id"])
		})
	}
}

func TestLogToCustomEvent(t *testing.T) {
	ld, lr := newLog()
	lr.Attributes().PutStr("microsoft.custom_event.name", "CartCheckedOut")
	lr.Attributes().PutInt("items", 3)
	// A custom event wins over exception attributes.
	lr.Attributes().PutStr("exception.type", "ignored")
	lr.SetTraceID(traceID)

	it, m := one(t, FromLogs(ld, testIKey))
	require.Equal(t, CustomEvent, it.Type)
	bd := baseData(m)
	require.Equal(t, "CartCheckedOut", bd["name"])
	require.NotContains(t, bd, "severityLevel")
	p := propsOf(m)
	require.Equal(t, "3", p["items"])
	require.Equal(t, "t01", p["tenant.id"])
	require.Equal(t, "CartCheckedOut", p["microsoft.custom_event.name"])
	require.Equal(t, traceHex, tagsOf(m)["ai.operation.id"])
	require.NotContains(t, tagsOf(m), "ai.operation.parentId")
}

func TestCustomEventWithEmptyName(t *testing.T) {
	ld, lr := newLog()
	lr.Attributes().PutStr("microsoft.custom_event.name", "")
	it, m := one(t, FromLogs(ld, testIKey))
	require.Equal(t, CustomEvent, it.Type)
	require.Equal(t, "n/a", baseData(m)["name"])
}

func TestLogWithoutCorrelation(t *testing.T) {
	ld, lr := newLog()
	lr.Body().SetStr("m")
	_, m := one(t, FromLogs(ld, testIKey))
	require.NotContains(t, tagsOf(m), "ai.operation.id")
	require.NotContains(t, tagsOf(m), "ai.operation.parentId")
}

func TestLogTime(t *testing.T) {
	observed := testStart.Add(time.Second)
	t.Run("timestamp", func(t *testing.T) {
		ld, lr := newLog()
		lr.SetObservedTimestamp(ts(observed))
		_, m := one(t, FromLogs(ld, testIKey))
		require.Equal(t, startStr, m["time"])
	})
	t.Run("observed", func(t *testing.T) {
		ld, lr := newLog()
		lr.SetTimestamp(0)
		lr.SetObservedTimestamp(ts(observed))
		_, m := one(t, FromLogs(ld, testIKey))
		require.Equal(t, "2024-05-01T10:00:01.1234567Z", m["time"])
	})
	t.Run("neither", func(t *testing.T) {
		ld, lr := newLog()
		lr.SetTimestamp(0)
		before := time.Now().Add(-time.Millisecond)
		_, m := one(t, FromLogs(ld, testIKey))
		got, err := time.Parse(time.RFC3339Nano, m["time"].(string))
		require.NoError(t, err)
		require.True(t, got.After(before) && got.Before(time.Now().Add(time.Millisecond)))
	})
}
