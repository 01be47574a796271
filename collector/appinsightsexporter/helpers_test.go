package appinsightsexporter

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

const testIKey = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

// received is one POST the fake ingestion service got.
type received struct {
	ctx     context.Context // the request's context: done when the client gives up
	at      time.Time
	header  http.Header
	path    string
	method  string
	rawBody []byte
	lines   []string
}

// breeze is a fake ingestion service. answer decides the response to the
// n-th request (0-based); it may write anything.
type breeze struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(n int, r received, w http.ResponseWriter)
}

func newBreeze(t *testing.T, answer func(n int, r received, w http.ResponseWriter)) *breeze {
	b := &breeze{t: t, answer: answer}
	b.srv = httptest.NewServer(http.HandlerFunc(b.handle))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *breeze) handle(w http.ResponseWriter, r *http.Request) {
	rec := received{ctx: r.Context(), at: time.Now(), header: r.Header.Clone(), path: r.URL.Path, method: r.Method}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	rec.rawBody = raw
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			plain, err := io.ReadAll(zr)
			if err == nil {
				sc := bufio.NewScanner(bytes.NewReader(plain))
				sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
				for sc.Scan() {
					rec.lines = append(rec.lines, sc.Text())
				}
			}
		}
	}
	b.mu.Lock()
	n := len(b.got)
	b.got = append(b.got, rec)
	b.mu.Unlock()
	b.answer(n, rec, w)
}

func (b *breeze) requests() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.got...)
}

func (b *breeze) url() string { return b.srv.URL }

// answerJSON writes a status and a Breeze body.
func answerJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func ok(w http.ResponseWriter, r received) {
	answerJSON(w, http.StatusOK, trackResponse{ItemsReceived: len(r.lines), ItemsAccepted: len(r.lines)})
}

// testConfig is the default configuration pointed at url, with fast retries
// and batching.
func testConfig(url string) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.ConnectionString = configopaque.String("InstrumentationKey=" + testIKey + ";IngestionEndpoint=" + url + "/")
	cfg.BackOffConfig.InitialInterval = 10 * time.Millisecond
	cfg.BackOffConfig.MaxInterval = 50 * time.Millisecond
	cfg.BackOffConfig.RandomizationFactor = 0
	cfg.TimeoutConfig.Timeout = 5 * time.Second
	q := cfg.QueueSettings.Get()
	q.Batch.Get().FlushTimeout = 10 * time.Millisecond
	return cfg
}

func withoutQueue(cfg *Config) *Config {
	cfg.QueueSettings = configoptional.None[exporterhelper.QueueBatchConfig]()
	return cfg
}

// env is a test exporter with its telemetry.
type env struct {
	tel  *componenttest.Telemetry
	logs *observer.ObservedLogs
	set  exporter.Settings
}

func newEnv(t *testing.T) *env {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	core, logs := observer.New(zapcore.DebugLevel)
	set := exportertest.NewNopSettings(componentType)
	set.ID = component.NewIDWithName(componentType, "tenant-a")
	set.TelemetrySettings = tel.NewTelemetrySettings()
	set.Logger = zap.New(core)
	return &env{tel: tel, logs: logs, set: set}
}

// fakeTraces converts each span into one envelope {"name":<span name>}:
// REQUEST for server spans, DEPENDENCY for the others.
func fakeTraces(td ptrace.Traces, iKey string) []envelope.Item {
	var items []envelope.Item
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, s := range ss.Spans().All() {
				typ := envelope.Dependency
				if s.Kind() == ptrace.SpanKindServer {
					typ = envelope.Request
				}
				js, _ := json.Marshal(map[string]string{"name": s.Name(), "iKey": iKey})
				items = append(items, envelope.Item{Type: typ, JSON: js})
			}
		}
	}
	return items
}

// fakeLogs converts each log record into a TRACE envelope {"name":<body>}.
func fakeLogs(ld plog.Logs, iKey string) []envelope.Item {
	var items []envelope.Item
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				js, _ := json.Marshal(map[string]string{"name": lr.Body().AsString(), "iKey": iKey})
				items = append(items, envelope.Item{Type: envelope.Trace, JSON: js})
			}
		}
	}
	return items
}

// spans makes traces with the named spans; names starting with "srv" are
// server spans.
func spans(names ...string) ptrace.Traces {
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	for _, n := range names {
		s := ss.Spans().AppendEmpty()
		s.SetName(n)
		if len(n) >= 3 && n[:3] == "srv" {
			s.SetKind(ptrace.SpanKindServer)
		}
	}
	return td
}

func logRecords(bodies ...string) plog.Logs {
	ld := plog.NewLogs()
	sl := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty()
	for _, b := range bodies {
		sl.LogRecords().AppendEmpty().Body().SetStr(b)
	}
	return ld
}

func names(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// lineNames extracts the "name" of each received envelope.
func lineNames(t *testing.T, lines []string) []string {
	t.Helper()
	out := make([]string, len(lines))
	for i, l := range lines {
		var m map[string]string
		require.NoError(t, json.Unmarshal([]byte(l), &m), "line %d is not JSON: %q", i, l)
		out[i] = m["name"]
	}
	return out
}

func newTraces(t *testing.T, ev *env, cfg *Config) *tracesExporter {
	t.Helper()
	require.NoError(t, cfg.Validate())
	exp, err := newTracesExporter(context.Background(), ev.set, cfg, fakeTraces)
	require.NoError(t, err)
	return exp.(*tracesExporter)
}

func startTraces(t *testing.T, ev *env, cfg *Config) *tracesExporter {
	t.Helper()
	exp := newTraces(t, ev, cfg)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	return exp
}

func stop(t *testing.T, c component.Component) {
	t.Helper()
	require.NoError(t, c.Shutdown(context.Background()))
}

// counter sums the data points of a counter whose attributes include all of
// want. A counter never recorded reads 0.
func (ev *env) counter(t *testing.T, name string, want map[string]string) int64 {
	t.Helper()
	m, err := ev.tel.GetMetric(name)
	if err != nil {
		return 0
	}
	sum, isSum := m.Data.(metricdata.Sum[int64])
	require.True(t, isSum, "%s is a %T", name, m.Data)
	require.True(t, sum.IsMonotonic)
	var total int64
	for _, dp := range sum.DataPoints {
		match := true
		for k, v := range want {
			got, has := dp.Attributes.Value(attribute.Key(k))
			if !has || got.AsString() != v {
				match = false
				break
			}
		}
		if match {
			total += dp.Value
		}
	}
	return total
}

// counts is a snapshot of the three counters, summed over all attributes
// but the given code filters.
type counts struct{ succeeded, dropped, retried int64 }

func (ev *env) totals(t *testing.T) counts {
	return counts{
		succeeded: ev.counter(t, metricSucceeded, nil),
		dropped:   ev.counter(t, metricDropped, nil),
		retried:   ev.counter(t, metricRetried, nil),
	}
}

func (ev *env) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 5*time.Millisecond, "waiting for %s", what)
}
