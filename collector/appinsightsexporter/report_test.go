package appinsightsexporter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// stat is one statistics envelope as the fake service received it.
type stat struct {
	name, baseType, iKey string
	tags                 map[string]string
	metric               string
	kind, count          float64
	value                int64
	props                map[string]string
}

// key names the series of a stat: metric, telemetry type, code, reason,
// telemetry_success.
func (s stat) key() string {
	code, reason := s.props[dimDropCode], s.props[dimDropReason]
	if s.metric == statRetried {
		code, reason = s.props[dimRetryCode], s.props[dimRetryReason]
	}
	k := s.metric + "|" + s.props[dimTelemetryType]
	if code != "" || reason != "" {
		k += "|" + code + "|" + reason
	}
	if v, ok := s.props[dimTelemetrySuccess]; ok {
		k += "|success=" + v
	}
	return k
}

// parseStat decodes a line if it is a statistics envelope.
func parseStat(t *testing.T, line string) (stat, bool) {
	t.Helper()
	var m struct {
		Name string            `json:"name"`
		IKey string            `json:"iKey"`
		Tags map[string]string `json:"tags"`
		Data struct {
			BaseType string `json:"baseType"`
			BaseData struct {
				Metrics []struct {
					Name  string  `json:"name"`
					Kind  float64 `json:"kind"`
					Value float64 `json:"value"`
					Count float64 `json:"count"`
				} `json:"metrics"`
				Properties map[string]string `json:"properties"`
			} `json:"baseData"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(line), &m) != nil || m.Data.BaseType != "MetricData" || len(m.Data.BaseData.Metrics) != 1 {
		return stat{}, false
	}
	mt := m.Data.BaseData.Metrics[0]
	switch mt.Name {
	case statSucceeded, statDropped, statRetried:
	default:
		return stat{}, false
	}
	return stat{
		name: m.Name, baseType: m.Data.BaseType, iKey: m.IKey, tags: m.Tags,
		metric: mt.Name, kind: mt.Kind, count: mt.Count, value: int64(mt.Value),
		props: m.Data.BaseData.Properties,
	}, true
}

// statsOf returns the statistics envelopes of a request.
func statsOf(t *testing.T, r received) []stat {
	t.Helper()
	var out []stat
	for _, l := range r.lines {
		if s, ok := parseStat(t, l); ok {
			out = append(out, s)
		}
	}
	return out
}

func isReport(t *testing.T, r received) bool {
	return len(r.lines) > 0 && len(statsOf(t, r)) == len(r.lines)
}

// reportRequests returns the requests that carried statistics.
func reportRequests(t *testing.T, b *breeze) []received {
	var out []received
	for _, r := range b.requests() {
		if isReport(t, r) {
			out = append(out, r)
		}
	}
	return out
}

// reported sums the statistics received so far by series.
func reported(t *testing.T, b *breeze) map[string]int64 {
	out := map[string]int64{}
	for _, r := range reportRequests(t, b) {
		for _, s := range statsOf(t, r) {
			out[s.key()] += s.value
		}
	}
	return out
}

// withReports answers statistics with 200 and hands the telemetry to data,
// numbering the telemetry requests alone.
func withReports(t *testing.T, data func(n int, r received, w http.ResponseWriter)) func(int, received, http.ResponseWriter) {
	var n atomic.Int64
	return func(_ int, r received, w http.ResponseWriter) {
		if isReport(t, r) {
			ok(w, r)
			return
		}
		data(int(n.Add(1)-1), r, w)
	}
}

func reportConfig(url string, interval time.Duration) *Config {
	cfg := testConfig(url)
	cfg.DeliveryReport = configoptional.Some(DeliveryReportConfig{Interval: interval})
	return cfg
}

// flaggedTraces is fakeTraces whose envelopes also record, as the real ones
// do, the operation's success: spans whose name ends with "-fail" failed.
func flaggedTraces(td ptrace.Traces, iKey string) []envelope.Item {
	items := fakeTraces(td, iKey)
	i := 0
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, s := range ss.Spans().All() {
				js, _ := json.Marshal(map[string]any{
					"name": s.Name(), "iKey": iKey,
					"data": map[string]any{"baseData": map[string]any{"success": !strings.HasSuffix(s.Name(), "-fail")}},
				})
				items[i].JSON = js
				i++
			}
		}
	}
	return items
}

func startFlaggedTraces(t *testing.T, ev *env, cfg *Config) *tracesExporter {
	t.Helper()
	require.NoError(t, cfg.Validate()) // not confmap.Validate: tests use intervals below the minimum
	exp, err := newTracesExporter(context.Background(), ev.set, cfg, flaggedTraces)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	return exp.(*tracesExporter)
}

// requireMatchesCounters checks that, per metric and telemetry type, the
// statistics received equal the Prometheus counters.
func requireMatchesCounters(t *testing.T, ev *env, b *breeze) {
	t.Helper()
	got := map[string]int64{}
	for _, r := range reportRequests(t, b) {
		for _, s := range statsOf(t, r) {
			got[s.metric+"|"+s.props[dimTelemetryType]] += s.value
		}
	}
	want := map[string]int64{}
	for metric, inst := range map[string]string{statSucceeded: metricSucceeded, statDropped: metricDropped, statRetried: metricRetried} {
		for _, typ := range []string{"REQUEST", "DEPENDENCY", "TRACE", "UNKNOWN"} {
			if n := ev.counter(t, inst, map[string]string{attrTelemetryType: typ}); n != 0 {
				want[metric+"|"+typ] = n
			}
		}
	}
	require.Equal(t, want, got, "the report says what the counters say")
}

func TestDeliveryReportConfig(t *testing.T) {
	base := map[string]any{"connection_string": "InstrumentationKey=" + testIKey}
	load := func(t *testing.T, extra map[string]any) *Config {
		t.Helper()
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		cfg := createDefaultConfig().(*Config)
		require.NoError(t, confmap.NewFromStringMap(m).Unmarshal(cfg))
		return cfg
	}

	cfg := load(t, nil)
	require.False(t, cfg.DeliveryReport.HasValue(), "off unless the section is present")
	require.NoError(t, confmap.Validate(cfg))

	cfg = load(t, map[string]any{"delivery_report": nil})
	require.True(t, cfg.DeliveryReport.HasValue(), "an empty section turns it on")
	require.Equal(t, 15*time.Minute, cfg.DeliveryReport.Get().Interval)
	require.NoError(t, confmap.Validate(cfg))

	cfg = load(t, map[string]any{"delivery_report": map[string]any{"interval": "2m"}})
	require.Equal(t, 2*time.Minute, cfg.DeliveryReport.Get().Interval)
	require.NoError(t, confmap.Validate(cfg))

	cfg = load(t, map[string]any{"delivery_report": map[string]any{"interval": "1s"}})
	require.NoError(t, confmap.Validate(cfg), "1s is the minimum")

	cfg = load(t, map[string]any{"delivery_report": map[string]any{"enabled": false, "interval": "1m"}})
	require.False(t, cfg.DeliveryReport.HasValue())

	for _, bad := range []string{"500ms", "0s", "-1m"} {
		cfg = load(t, map[string]any{"delivery_report": map[string]any{"interval": bad}})
		err := confmap.Validate(cfg)
		require.ErrorContains(t, err, "delivery_report: interval must be at least 1s, got "+bad, bad)
		require.NotContains(t, err.Error(), testIKey)
	}

	m := map[string]any{}
	for k, v := range base {
		m[k] = v
	}
	m["delivery_report"] = map[string]any{"interval": "1m", "unknown": 1}
	require.Error(t, confmap.NewFromStringMap(m).Unmarshal(createDefaultConfig().(*Config)), "unknown keys are refused")
}

func TestDeliveryReportOffSendsNothing(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) })
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	require.Nil(t, exp.e.report)
	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1")))
	ev.waitFor(t, "1 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 1 })
	stop(t, exp)
	require.Empty(t, reportRequests(t, b))
	require.Len(t, b.requests(), 1)
}

func TestDeliveryReportSuccesses(t *testing.T) {
	b := newBreeze(t, withReports(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) }))
	ev := newEnv(t)
	ev.set.BuildInfo.Version = "1.2.3"
	cfg := reportConfig(b.url(), 50*time.Millisecond)
	exp := startTraces(t, ev, cfg)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1", "srv-2", "dep-1")))
	want := map[string]int64{statSucceeded + "|REQUEST": 2, statSucceeded + "|DEPENDENCY": 1}
	ev.waitFor(t, "the successes reported", func() bool { return len(reported(t, b)) == 2 })
	require.Equal(t, want, reported(t, b))

	reqs := reportRequests(t, b)
	r := reqs[0]
	require.Equal(t, "/v2.1/track", r.path, "the report goes to this exporter's own endpoint")
	require.Equal(t, "gzip", r.header.Get("Content-Encoding"))
	require.Equal(t, "application/x-json-stream", r.header.Get("Content-Type"))
	ss := statsOf(t, r)
	require.Len(t, ss, 2, "one envelope per series")
	for _, s := range ss {
		require.Equal(t, "Microsoft.ApplicationInsights.Metric", s.name)
		require.Equal(t, "MetricData", s.baseType)
		require.Equal(t, testIKey, s.iKey, "the report is for this exporter's own resource")
		require.Equal(t, "telemux-otelcol:1.0", s.tags["ai.internal.sdkVersion"])
		require.Zero(t, s.kind, "a measurement")
		require.EqualValues(t, 1, s.count)
		require.Equal(t, map[string]string{
			dimLanguage: "go", dimVersion: "1.2.3", dimComputeType: computeTypeFrom(os.Getenv),
			dimTelemetryType: s.props[dimTelemetryType],
		}, s.props, "successes carry no code")
	}
	require.Equal(t, "DEPENDENCY", ss[0].props[dimTelemetryType], "sorted")
	require.EqualValues(t, 1, ss[0].value)
	require.Equal(t, "REQUEST", ss[1].props[dimTelemetryType])
	require.EqualValues(t, 2, ss[1].value)

	// Values are per-interval counts: later reports do not repeat them, and
	// the statistics themselves are never counted as items.
	time.Sleep(5 * cfg.DeliveryReport.Get().Interval)
	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-3")))
	ev.waitFor(t, "the new success reported", func() bool { return reported(t, b)[statSucceeded+"|REQUEST"] == 3 })
	time.Sleep(3 * cfg.DeliveryReport.Get().Interval)
	stop(t, exp)
	require.Equal(t, map[string]int64{statSucceeded + "|REQUEST": 3, statSucceeded + "|DEPENDENCY": 1}, reported(t, b))
	require.Equal(t, counts{succeeded: 4}, ev.totals(t), "statistics are not items")
	requireMatchesCounters(t, ev, b)

	for _, e := range ev.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		require.NotContains(t, strings.ToLower(line), testIKey)
		require.NotContains(t, line, string(cfg.ConnectionString))
	}
}

func TestDeliveryReport206(t *testing.T) {
	b := newBreeze(t, withReports(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, http.StatusPartialContent, trackResponse{
				ItemsReceived: 5, ItemsAccepted: 2,
				Errors: []itemError{
					{Index: 1, StatusCode: 500},
					{Index: 2, StatusCode: 400},
					{Index: 3, StatusCode: 429},
					{Index: 4, StatusCode: 400},
				},
			})
			return
		}
		ok(w, r)
	}))
	ev := newEnv(t)
	exp := startFlaggedTraces(t, ev, reportConfig(b.url(), 50*time.Millisecond))

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-0", "dep-1", "dep-2", "dep-3", "dep-4-fail")))
	want := map[string]int64{
		statSucceeded + "|DEPENDENCY":                             3,
		statDropped + "|DEPENDENCY|400|Bad request|success=true":  1,
		statDropped + "|DEPENDENCY|400|Bad request|success=false": 1,
		statRetried + "|DEPENDENCY|500|Internal server error":     1,
		statRetried + "|DEPENDENCY|429|Too many requests":         1,
	}
	ev.waitFor(t, "the 206 reported", func() bool { return fmt.Sprint(reported(t, b)) == fmt.Sprint(want) })
	stop(t, exp)
	require.Equal(t, want, reported(t, b))
	requireMatchesCounters(t, ev, b)

	var dropped stat
	for _, r := range reportRequests(t, b) {
		for _, s := range statsOf(t, r) {
			if s.metric == statDropped && s.props[dimTelemetrySuccess] == "false" {
				dropped = s
			}
		}
	}
	require.Equal(t, map[string]string{
		dimLanguage: "go", dimVersion: dropped.props[dimVersion], dimComputeType: dropped.props[dimComputeType],
		dimTelemetryType: "DEPENDENCY", dimDropCode: "400", dimDropReason: "Bad request", dimTelemetrySuccess: "false",
	}, dropped.props)
}

func TestDeliveryReport429ThenSuccess(t *testing.T) {
	b := newBreeze(t, withReports(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, http.StatusTooManyRequests, trackResponse{})
			return
		}
		ok(w, r)
	}))
	ev := newEnv(t)
	exp := startTraces(t, ev, reportConfig(b.url(), 50*time.Millisecond))

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1", "dep-1", "dep-2")))
	want := map[string]int64{
		statSucceeded + "|REQUEST":                        1,
		statSucceeded + "|DEPENDENCY":                     2,
		statRetried + "|REQUEST|429|Too many requests":    1,
		statRetried + "|DEPENDENCY|429|Too many requests": 2,
	}
	ev.waitFor(t, "the retry and the success reported", func() bool { return fmt.Sprint(reported(t, b)) == fmt.Sprint(want) })
	stop(t, exp)
	require.Equal(t, want, reported(t, b))
	requireMatchesCounters(t, ev, b)
	for _, r := range reportRequests(t, b) {
		for _, s := range statsOf(t, r) {
			if s.metric == statRetried {
				require.NotContains(t, s.props, dimDropCode)
				require.Equal(t, "429", s.props[dimRetryCode])
				require.Equal(t, "Too many requests", s.props[dimRetryReason])
			}
		}
	}
}

func TestDeliveryReport400Dropped(t *testing.T) {
	b := newBreeze(t, withReports(t, func(_ int, _ received, w http.ResponseWriter) {
		answerJSON(w, http.StatusBadRequest, trackResponse{})
	}))
	ev := newEnv(t)
	exp := startFlaggedTraces(t, ev, reportConfig(b.url(), 50*time.Millisecond))

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1", "srv-2-fail", "dep-1-fail", "dep-2-fail")))
	want := map[string]int64{
		statDropped + "|REQUEST|400|Bad request|success=true":     1,
		statDropped + "|REQUEST|400|Bad request|success=false":    1,
		statDropped + "|DEPENDENCY|400|Bad request|success=false": 2,
	}
	ev.waitFor(t, "the drops reported", func() bool { return fmt.Sprint(reported(t, b)) == fmt.Sprint(want) })
	stop(t, exp)
	require.Equal(t, want, reported(t, b))
	requireMatchesCounters(t, ev, b)
}

func TestDeliveryReportShutdownFlush(t *testing.T) {
	b := newBreeze(t, withReports(t, func(n int, r received, w http.ResponseWriter) {
		if strings.Contains(strings.Join(r.lines, ""), "dep-down") {
			answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
			return
		}
		ok(w, r)
	}))
	ev := newEnv(t)
	cfg := reportConfig(b.url(), time.Hour) // no periodic report during the test
	cfg.BackOffConfig.InitialInterval = time.Hour
	cfg.BackOffConfig.MaxInterval = time.Hour
	q := cfg.QueueSettings.Get()
	q.Batch = configoptional.None[exporterhelper.BatchConfig]()
	exp := startTraces(t, ev, cfg)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-up")))
	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-down")))
	ev.waitFor(t, "1 succeeded, 1 retried", func() bool {
		return ev.totals(t) == counts{succeeded: 1, retried: 1}
	})
	require.Empty(t, reportRequests(t, b))

	stop(t, exp)
	reqs := reportRequests(t, b)
	require.Len(t, reqs, 1, "one final report at shutdown")
	require.Equal(t, map[string]int64{
		statSucceeded + "|REQUEST":                          1,
		statRetried + "|DEPENDENCY|503|Service unavailable": 1,
		statDropped + "|DEPENDENCY|503|Service unavailable": 1,
	}, reported(t, b), "the final report includes what the shutdown itself counted")
	requireMatchesCounters(t, ev, b)
}

// manualTicks replaces the report's ticker by a channel the test drives.
func manualTicks(r *deliveryReport) chan time.Time {
	ch := make(chan time.Time)
	r.newTicker = func(time.Duration) (<-chan time.Time, func()) { return ch, func() {} }
	return ch
}

func TestDeliveryReportFailureCarriedToNextInterval(t *testing.T) {
	var reportsSeen atomic.Int64
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		if isReport(t, r) {
			if reportsSeen.Add(1) == 1 {
				answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
				return
			}
		}
		ok(w, r)
	})
	ev := newEnv(t)
	cfg := reportConfig(b.url(), time.Hour)
	exp := newTraces(t, ev, cfg)
	ticks := manualTicks(exp.e.report)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1", "srv-2")))
	ev.waitFor(t, "2 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 2 })

	ticks <- time.Now()
	ev.waitFor(t, "the first report", func() bool { return len(reportRequests(t, b)) == 1 })
	require.Equal(t, map[string]int64{statSucceeded + "|REQUEST": 2}, reported(t, b), "refused with 503")

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-3", "dep-1")))
	ev.waitFor(t, "4 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 4 })
	ticks <- time.Now()
	ev.waitFor(t, "the second report", func() bool { return len(reportRequests(t, b)) == 2 })
	second := statsOf(t, reportRequests(t, b)[1])
	got := map[string]int64{}
	for _, s := range second {
		got[s.key()] += s.value
	}
	require.Len(t, second, 2, "the carried counts merge into the series, one envelope each")
	require.Equal(t, map[string]int64{statSucceeded + "|REQUEST": 3, statSucceeded + "|DEPENDENCY": 1}, got,
		"the second report carries the first one's counts and its own")

	ticks <- time.Now() // nothing left to report: no request
	stop(t, exp)
	require.Len(t, reportRequests(t, b), 2, "nothing is reported twice, and an empty report is not sent")
	require.Equal(t, counts{succeeded: 4}, ev.totals(t))
}

func TestDeliveryReportPartialAnswer(t *testing.T) {
	// A 206 to a report: listed envelopes with a retryable status are kept
	// for the next report, the others are given up.
	var reportsSeen atomic.Int64
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		if isReport(t, r) && reportsSeen.Add(1) == 1 {
			answerJSON(w, http.StatusPartialContent, trackResponse{
				ItemsReceived: 3, ItemsAccepted: 1,
				Errors: []itemError{{Index: 0, StatusCode: 503}, {Index: 2, StatusCode: 400}},
			})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	r := newDeliveryReport(connectionInfo{instrumentationKey: testIKey, trackURL: b.url() + "/v2.1/track"},
		reportConfig(b.url(), time.Hour), ev.set)
	r.addSucceeded(typeCounts{{typ: envelope.Request}: 5, {typ: envelope.Trace}: 7})
	r.addRetried("503", typeCounts{{typ: envelope.Trace}: 2})
	// Sorted: Item_Retry_Count|TRACE, Item_Success_Count|REQUEST, Item_Success_Count|TRACE.
	r.send(context.Background(), false)
	r.send(context.Background(), false)
	r.send(context.Background(), false)

	reqs := reportRequests(t, b)
	require.Len(t, reqs, 2)
	require.Len(t, statsOf(t, reqs[0]), 3)
	again := statsOf(t, reqs[1])
	require.Len(t, again, 1)
	require.Equal(t, statRetried+"|TRACE|503|Service unavailable", again[0].key())
	require.EqualValues(t, 2, again[0].value)
	require.Contains(t, ev.logs.FilterMessageSnippet("refused").All()[0].ContextMap(), "refused")
}

func TestDeliveryReportSharedAcrossSignals(t *testing.T) {
	b := newBreeze(t, withReports(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) }))
	ev := newEnv(t)
	cfg := reportConfig(b.url(), time.Hour)
	require.NoError(t, confmap.Validate(cfg))
	// The collector hands the same *Config to the instances of a component.
	tr, err := newTracesExporter(context.Background(), ev.set, cfg, fakeTraces)
	require.NoError(t, err)
	lg, err := newLogsExporter(context.Background(), ev.set, cfg, fakeLogs)
	require.NoError(t, err)
	require.Same(t, tr.(*tracesExporter).e.report, lg.(*logsExporter).e.report, "one report per component")
	ticks := manualTicks(tr.(*tracesExporter).e.report)
	host := componenttest.NewNopHost()
	require.NoError(t, tr.Start(context.Background(), host))
	require.NoError(t, lg.Start(context.Background(), host))

	require.NoError(t, tr.ConsumeTraces(context.Background(), spans("srv-1")))
	require.NoError(t, lg.ConsumeLogs(context.Background(), logRecords("a", "b")))
	ev.waitFor(t, "3 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 3 })
	ticks <- time.Now()
	ev.waitFor(t, "one report", func() bool { return len(reportRequests(t, b)) == 1 })
	require.Equal(t, map[string]int64{statSucceeded + "|REQUEST": 1, statSucceeded + "|TRACE": 2}, reported(t, b),
		"both signals' counts in one request")

	require.NoError(t, lg.ConsumeLogs(context.Background(), logRecords("c")))
	ev.waitFor(t, "4 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 4 })
	require.NoError(t, tr.Shutdown(context.Background()))
	require.Len(t, reportRequests(t, b), 1, "no final report while an instance of the component runs")
	require.NoError(t, lg.ConsumeLogs(context.Background(), logRecords("d")))
	ev.waitFor(t, "5 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 5 })
	require.NoError(t, lg.Shutdown(context.Background()))

	require.Len(t, reportRequests(t, b), 2, "the last instance sends the final report")
	require.Equal(t, map[string]int64{statSucceeded + "|REQUEST": 1, statSucceeded + "|TRACE": 4}, reported(t, b),
		"each item reported exactly once")
	requireMatchesCounters(t, ev, b)
	reports.mu.Lock()
	_, held := reports.m[cfg]
	reports.mu.Unlock()
	require.False(t, held, "the report is released with its component")
}

func TestDeliveryReportCodes(t *testing.T) {
	// Every code the exporter counts, through the same record calls, with
	// the code and reason the SDKs use; the Prometheus attributes keep
	// telemux's own codes.
	ev := newEnv(t)
	r := newDeliveryReport(connectionInfo{instrumentationKey: testIKey, trackURL: "http://127.0.0.1:1/v2.1/track"},
		reportConfig("http://127.0.0.1:1", time.Hour), ev.set)
	c, err := newCounters(ev.set.MeterProvider, exporterID, "traces", r)
	require.NoError(t, err)
	req := itemClass{typ: envelope.Request, app: appFailed}
	one := func(cl itemClass) typeCounts { return typeCounts{cl: 1} }

	c.recordSucceeded(one(itemClass{typ: envelope.CustomMetric}))
	c.recordSucceeded(one(itemClass{typ: envelope.Exception}))
	c.recordSucceeded(one(itemClass{typ: envelope.CustomEvent}))
	c.recordSucceeded(one(itemClass{typ: "SOMETHING_ELSE"}))
	c.recordDropped(codePersistenceCapacity, one(req))
	c.recordDropped(codeExpired, one(itemClass{typ: envelope.Trace}))
	c.recordDropped(codeTimeout, one(itemClass{typ: envelope.Dependency, app: appSucceeded}))
	c.recordDropped(codeException, one(itemClass{typ: envelope.Dependency}))
	c.recordDroppedBecause(codeException, reasonStorage, typeCounts{{typ: unknownType}: 4})
	c.recordDroppedBecause(codeException, reasonClient, one(itemClass{typ: envelope.Trace}))
	c.recordDropped("402", one(itemClass{typ: envelope.Trace}))
	c.recordDropped("439", one(itemClass{typ: envelope.Trace}))
	c.recordDropped("0", one(itemClass{typ: envelope.Trace}))
	c.recordRetried(codeException, one(itemClass{typ: envelope.Trace}))
	c.recordRetried(codeTimeout, one(itemClass{typ: envelope.Trace}))
	c.recordRetried("503", one(req))
	c.recordRetried("599", one(itemClass{typ: envelope.Trace}))

	got := map[string]int64{}
	for s, n := range r.take() {
		got[stat{metric: s.metric, props: r.properties(s)}.key()] += n
	}
	require.Equal(t, map[string]int64{
		statSucceeded + "|CUSTOM_METRIC": 1,
		statSucceeded + "|EXCEPTION":     1,
		statSucceeded + "|CUSTOM_EVENT":  1,
		statSucceeded + "|UNKNOWN":       1,
		statDropped + "|REQUEST|CLIENT_PERSISTENCE_CAPACITY|Client persistence capacity|success=false": 1,
		statDropped + "|TRACE|CLIENT_EXPIRED_DATA|Expired data":                                        1,
		statDropped + "|DEPENDENCY|CLIENT_EXCEPTION|Timeout exception|success=true":                    1,
		statDropped + "|DEPENDENCY|CLIENT_EXCEPTION|Network exception":                                 1,
		statDropped + "|UNKNOWN|CLIENT_EXCEPTION|Storage exception":                                    4,
		statDropped + "|TRACE|CLIENT_EXCEPTION|Client exception":                                       1,
		statDropped + "|TRACE|402|Daily quota exceeded":                                                1,
		statDropped + "|TRACE|439|Client error 4xx":                                                    1,
		statDropped + "|TRACE|UNKNOWN|Unknown reason":                                                  1,
		statRetried + "|TRACE|CLIENT_EXCEPTION|Network exception":                                      1,
		statRetried + "|TRACE|CLIENT_TIMEOUT|Client timeout":                                           1,
		statRetried + "|REQUEST|503|Service unavailable":                                               1,
		statRetried + "|TRACE|599|Server error 5xx":                                                    1,
	}, got)
	require.Empty(t, r.take(), "taken once")

	// The Prometheus counters are unchanged by the report.
	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeExpired, attrTelemetryType: "TRACE"}))
	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeTimeout}))
	require.EqualValues(t, 6, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeException}))
	require.EqualValues(t, 1, ev.counter(t, metricRetried, map[string]string{attrRetryCode: codeTimeout}))
	require.EqualValues(t, 1, ev.counter(t, metricSucceeded, map[string]string{attrTelemetryType: "SOMETHING_ELSE"}))
}

func TestDeliveryReportSeriesBounded(t *testing.T) {
	ev := newEnv(t)
	r := newDeliveryReport(connectionInfo{instrumentationKey: testIKey, trackURL: "http://127.0.0.1:1/v2.1/track"},
		reportConfig("http://127.0.0.1:1", time.Hour), ev.set)
	var total int64
	types := []envelope.TelemetryType{envelope.Request, envelope.Dependency, envelope.Trace, envelope.Exception, envelope.CustomEvent, envelope.CustomMetric}
	for status := 400; status < 600; status++ {
		for _, typ := range types {
			r.addDropped(fmt.Sprint(status), "", typeCounts{{typ: typ}: 2})
			r.addRetried(fmt.Sprint(status), typeCounts{{typ: typ}: 1})
			total += 3
		}
	}
	snap := r.take()
	require.LessOrEqual(t, len(snap), maxReportSeries+2*len(types), "bounded: past the bound, new codes fold into UNKNOWN")
	var sum, unknown int64
	for s, n := range snap {
		sum += n
		if s.code == sdkCodeUnknown {
			unknown += n
		}
	}
	require.Equal(t, total, sum, "no count is lost")
	require.Positive(t, unknown)

	// Counts kept after failed reports stay within the bound too.
	for range 3 {
		r.putBack(snap, keysOf(snap))
	}
	require.LessOrEqual(t, len(r.take()), maxReportSeries+2*len(types))
}

func keysOf(m map[series]int64) []series {
	out := make([]series, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	return out
}

func TestComputeType(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	require.Equal(t, "unknown", computeTypeFrom(env()))
	require.Equal(t, "aks", computeTypeFrom(env("KUBERNETES_SERVICE_HOST", "10.0.0.1")))
	require.Equal(t, "aks", computeTypeFrom(env("AKS_ARM_NAMESPACE_ID", "/subscriptions/x")))
	require.Equal(t, "appsvc", computeTypeFrom(env("WEBSITE_SITE_NAME", "site")))
	require.Equal(t, "functions", computeTypeFrom(env("WEBSITE_SITE_NAME", "site", "FUNCTIONS_WORKER_RUNTIME", "python")))
}
