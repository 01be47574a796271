package envelope

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// metricOf returns the single DataPoint object of a MetricData item.
func metricOf(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	ms := baseData(m)["metrics"].([]any)
	require.Len(t, ms, 1)
	return ms[0].(map[string]any)
}

func TestGaugeAndSum(t *testing.T) {
	md, g := newMetric("queue.depth")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetDoubleValue(12.5)
	dp.SetTimestamp(ts(testStart))
	dp.Attributes().PutStr("queue", "orders")
	dp.Attributes().PutStr("tenant.id", "point-wins")

	s := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
	s.SetName("requests")
	sum := s.SetEmptySum()
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	sdp := sum.DataPoints().AppendEmpty()
	sdp.SetIntValue(1234)
	sdp.SetStartTimestamp(ts(testStart))
	sdp.SetTimestamp(ts(testEnd))

	items := FromMetrics(md, testIKey)
	require.Len(t, items, 2)

	m := decode(t, items[0])
	require.Equal(t, CustomMetric, items[0].Type)
	require.Equal(t, startStr, m["time"])
	require.Equal(t, testIKey, m["iKey"])
	require.Equal(t, map[string]any{"name": "queue.depth", "kind": 0.0, "value": 12.5, "count": 1.0}, metricOf(t, m))
	require.Equal(t, "orders", propsOf(m)["queue"])
	require.Equal(t, "point-wins", propsOf(m)["tenant.id"])
	require.Equal(t, "shop.checkout", tagsOf(m)["ai.cloud.role"])
	require.NotContains(t, tagsOf(m), "ai.operation.id")

	m = decode(t, items[1])
	require.Equal(t, "2024-05-01T10:00:01.6234567Z", m["time"])
	require.Equal(t, map[string]any{"name": "requests", "kind": 0.0, "value": 1234.0, "count": 1.0}, metricOf(t, m))
	require.Equal(t, "t01", propsOf(m)["tenant.id"])
	require.Contains(t, string(items[1].JSON), `"tenant.id":"t01"`)
}

func TestHistogram(t *testing.T) {
	md, h := newMetric("http.server.request.duration")
	dps := h.SetEmptyHistogram().DataPoints()
	full := dps.AppendEmpty()
	full.SetTimestamp(ts(testStart))
	full.SetCount(4)
	full.SetSum(2.5)
	full.SetMin(0.1)
	full.SetMax(1.5)
	full.BucketCounts().FromRaw([]uint64{1, 3})
	full.ExplicitBounds().FromRaw([]float64{1})
	bare := dps.AppendEmpty()
	bare.SetTimestamp(ts(testStart))
	bare.SetCount(2)
	bare.SetSum(3)

	items := FromMetrics(md, testIKey)
	require.Len(t, items, 2)
	require.Equal(t, map[string]any{
		"name": "http.server.request.duration", "kind": 1.0, "value": 2.5, "count": 4.0, "min": 0.1, "max": 1.5,
	}, metricOf(t, decode(t, items[0])))
	require.Equal(t, map[string]any{
		"name": "http.server.request.duration", "kind": 1.0, "value": 3.0, "count": 2.0,
	}, metricOf(t, decode(t, items[1])))
}

func TestExponentialHistogram(t *testing.T) {
	md, h := newMetric("latency")
	dp := h.SetEmptyExponentialHistogram().DataPoints().AppendEmpty()
	dp.SetTimestamp(ts(testStart))
	dp.SetCount(10)
	dp.SetSum(55)
	dp.SetMin(1)
	dp.SetMax(10)
	dp.Attributes().PutStr("route", "/a")
	it, m := one(t, FromMetrics(md, testIKey))
	require.Equal(t, CustomMetric, it.Type)
	require.Equal(t, map[string]any{"name": "latency", "kind": 1.0, "value": 55.0, "count": 10.0, "min": 1.0, "max": 10.0}, metricOf(t, m))
	require.Equal(t, "/a", propsOf(m)["route"])
}

func TestSummary(t *testing.T) {
	md, s := newMetric("rpc.latency")
	dps := s.SetEmptySummary().DataPoints()
	dp := dps.AppendEmpty()
	dp.SetTimestamp(ts(testStart))
	dp.SetCount(3)
	dp.SetSum(9)
	for q, v := range map[float64]float64{0: 1, 0.5: 3, 1: 5} {
		qv := dp.QuantileValues().AppendEmpty()
		qv.SetQuantile(q)
		qv.SetValue(v)
	}
	median := dps.AppendEmpty()
	median.SetTimestamp(ts(testStart))
	median.SetCount(3)
	median.SetSum(9)
	qv := median.QuantileValues().AppendEmpty()
	qv.SetQuantile(0.5)
	qv.SetValue(3)

	items := FromMetrics(md, testIKey)
	require.Len(t, items, 2)
	require.Equal(t, map[string]any{"name": "rpc.latency", "kind": 1.0, "value": 9.0, "count": 3.0, "min": 1.0, "max": 5.0},
		metricOf(t, decode(t, items[0])))
	require.Equal(t, map[string]any{"name": "rpc.latency", "kind": 1.0, "value": 9.0, "count": 3.0},
		metricOf(t, decode(t, items[1])))
}

func TestMetricValuesJSONCannotCarry(t *testing.T) {
	md, g := newMetric("g")
	gdps := g.SetEmptyGauge().DataPoints()
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 7} {
		dp := gdps.AppendEmpty()
		dp.SetTimestamp(ts(testStart))
		dp.SetDoubleValue(v)
	}
	gdps.AppendEmpty().SetTimestamp(ts(testStart)) // no value at all
	stale := gdps.AppendEmpty()
	stale.SetTimestamp(ts(testStart))
	stale.SetDoubleValue(1)
	stale.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))

	metrics := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	h := metrics.AppendEmpty()
	h.SetName("h")
	hdps := h.SetEmptyHistogram().DataPoints()
	nanSum := hdps.AppendEmpty()
	nanSum.SetCount(1)
	nanSum.SetSum(math.NaN())
	noSum := hdps.AppendEmpty()
	noSum.SetCount(1)
	empty := hdps.AppendEmpty() // count 0, no sum: an honest zero
	empty.SetTimestamp(ts(testStart))
	empty.SetMin(math.NaN()) // ignored: no extremes without data
	nanExtremes := hdps.AppendEmpty()
	nanExtremes.SetTimestamp(ts(testStart))
	nanExtremes.SetCount(2)
	nanExtremes.SetSum(4)
	nanExtremes.SetMin(math.NaN())
	nanExtremes.SetMax(math.Inf(1))

	sm := metrics.AppendEmpty()
	sm.SetName("s")
	sdp := sm.SetEmptySummary().DataPoints().AppendEmpty()
	sdp.SetCount(1)
	sdp.SetSum(math.Inf(-1))

	items := FromMetrics(md, testIKey)
	require.Len(t, items, 3)
	for _, it := range items {
		require.NotContains(t, string(it.JSON), "NaN")
		require.NotContains(t, string(it.JSON), "Inf")
	}
	require.Equal(t, map[string]any{"name": "g", "kind": 0.0, "value": 7.0, "count": 1.0}, metricOf(t, decode(t, items[0])))
	require.Equal(t, map[string]any{"name": "h", "kind": 1.0, "value": 0.0, "count": 0.0}, metricOf(t, decode(t, items[1])))
	require.Equal(t, map[string]any{"name": "h", "kind": 1.0, "value": 4.0, "count": 2.0}, metricOf(t, decode(t, items[2])))
}

func TestMetricEdgeValues(t *testing.T) {
	md, g := newMetric("")
	dps := g.SetEmptyGauge().DataPoints()
	for _, v := range []float64{1e-9, 1e25, -0.5, math.MaxFloat64} {
		dp := dps.AppendEmpty()
		dp.SetTimestamp(ts(testStart))
		dp.SetDoubleValue(v)
	}
	big := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
	big.SetName("big")
	hdp := big.SetEmptyHistogram().DataPoints().AppendEmpty()
	hdp.SetTimestamp(ts(testStart))
	hdp.SetCount(math.MaxUint64)
	hdp.SetSum(1)

	items := FromMetrics(md, testIKey)
	require.Len(t, items, 5)
	for i, want := range []float64{1e-9, 1e25, -0.5, math.MaxFloat64} {
		dp := metricOf(t, decode(t, items[i]))
		require.Equal(t, want, dp["value"])
		require.Equal(t, "n/a", dp["name"], "the service requires a metric name")
	}
	require.EqualValues(t, math.MaxInt32, metricOf(t, decode(t, items[4]))["count"], "count is an int32 in the contract")
}

func TestMetricTimeFallsBackToStart(t *testing.T) {
	md, g := newMetric("g")
	dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetIntValue(1)
	dp.SetStartTimestamp(ts(testStart.Add(time.Minute)))
	_, m := one(t, FromMetrics(md, testIKey))
	require.Equal(t, "2024-05-01T10:01:00.1234567Z", m["time"])
}
