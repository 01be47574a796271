package envelope

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestStatistic(t *testing.T) {
	props := map[string]string{"telemetry_type": "REQUEST", "language": "go", "drop.code": "400"}
	it := Statistic(testIKey, "Item_Dropped_Count", 7, testStart, props)
	m := decode(t, it)
	require.Equal(t, CustomMetric, it.Type)
	require.Equal(t, "Microsoft.ApplicationInsights.Metric", m["name"])
	require.Equal(t, startStr, m["time"])
	require.Equal(t, testIKey, m["iKey"])
	require.Equal(t, map[string]any{"ai.internal.sdkVersion": "telemux-otelcol:1.0"}, tagsOf(m), "no resource: only the SDK version tag")
	require.Equal(t, map[string]any{"name": "Item_Dropped_Count", "kind": 0.0, "value": 7.0, "count": 1.0}, metricOf(t, m))
	require.Equal(t, map[string]any{"telemetry_type": "REQUEST", "language": "go", "drop.code": "400"}, propsOf(m))

	// Deterministic whatever the map order.
	for range 10 {
		require.Equal(t, string(it.JSON), string(Statistic(testIKey, "Item_Dropped_Count", 7, testStart, props).JSON))
	}
}

func TestRecordedSuccess(t *testing.T) {
	for _, tc := range []struct {
		name        string
		kind        ptrace.SpanKind
		failed      bool
		wantSuccess bool
	}{
		{"request ok", ptrace.SpanKindServer, false, true},
		{"request failed", ptrace.SpanKindServer, true, false},
		{"dependency ok", ptrace.SpanKindClient, false, true},
		{"dependency failed", ptrace.SpanKindClient, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td, s := newSpan(tc.kind, "op")
			if tc.failed {
				s.Status().SetCode(ptrace.StatusCodeError)
			}
			// Strings that look like the member must not fool the search.
			s.Attributes().PutStr(`x"success":`+boolString(!tc.wantSuccess), `"success":`+boolString(!tc.wantSuccess))
			s.Attributes().PutStr("success", boolString(!tc.wantSuccess))
			items := FromTraces(td, testIKey)
			require.Len(t, items, 1)
			ok, known := RecordedSuccess(items[0].JSON)
			require.True(t, known)
			require.Equal(t, tc.wantSuccess, ok)
			require.Equal(t, tc.wantSuccess, baseData(decode(t, items[0]))["success"])
		})
	}

	_, known := RecordedSuccess([]byte(`{"name":"x","data":{"baseData":{"message":"\"success\":false"}}}`))
	require.False(t, known, "an escaped look-alike is not the member")
	ok, known := RecordedSuccess([]byte(`{"properties":{"success":"false"},"success":true}`))
	require.True(t, known, "a string-valued success is skipped")
	require.True(t, ok)
	_, known = RecordedSuccess(Statistic(testIKey, "m", 1, testStart, nil).JSON)
	require.False(t, known)
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
