package appinsightsexporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
)

const exporterID = "telemux_appinsights/tenant-a"

func code(key, value string) map[string]string { return map[string]string{key: value} }

func TestBodyIsGzipNDJSONWithHeaders(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) })
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	td := spans("srv-a", "dep-b", "dep-c")
	require.NoError(t, exp.ConsumeTraces(context.Background(), td))
	ev.waitFor(t, "3 items succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 3 })

	reqs := b.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, http.MethodPost, r.method)
	require.Equal(t, "/v2.1/track", r.path)
	require.Equal(t, "application/x-json-stream", r.header.Get("Content-Type"))
	require.Equal(t, "gzip", r.header.Get("Content-Encoding"))

	zr, err := gzip.NewReader(bytes.NewReader(r.rawBody))
	require.NoError(t, err, "the body is gzip")
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	var want bytes.Buffer
	for _, it := range fakeTraces(spans("srv-a", "dep-b", "dep-c"), testIKey) {
		want.Write(it.JSON)
		want.WriteByte('\n')
	}
	require.Equal(t, want.String(), string(plain), "one compact envelope per line, each ending with a newline")
}

func Test200CountsSucceededPerType(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) })
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("srv-1", "srv-2", "dep-1")))
	ev.waitFor(t, "3 items succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 3 })

	require.EqualValues(t, 2, ev.counter(t, metricSucceeded, map[string]string{attrExporter: exporterID, attrTelemetryType: "REQUEST"}))
	require.EqualValues(t, 1, ev.counter(t, metricSucceeded, map[string]string{attrExporter: exporterID, attrTelemetryType: "DEPENDENCY"}))
	require.EqualValues(t, 3, ev.counter(t, metricSucceeded, map[string]string{attrSignal: "traces"}))
	require.Equal(t, counts{succeeded: 3}, ev.totals(t))
	require.Len(t, b.requests(), 1)
}

func TestLogsCountedAsTrace(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) })
	ev := newEnv(t)
	cfg := testConfig(b.url())
	exp, err := newLogsExporter(context.Background(), ev.set, cfg, fakeLogs)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeLogs(context.Background(), logRecords("one", "two")))
	ev.waitFor(t, "2 items succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 2 })
	// The signal tells these TRACE items from a span's events.
	require.EqualValues(t, 2, ev.counter(t, metricSucceeded, map[string]string{attrTelemetryType: "TRACE", attrSignal: "logs"}))
	require.EqualValues(t, 0, ev.counter(t, metricSucceeded, map[string]string{attrSignal: "traces"}))
	require.Equal(t, []string{"one", "two"}, lineNames(t, b.requests()[0].lines))
}

func Test206ResendsOnlyRetryableItems(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, http.StatusPartialContent, trackResponse{
				ItemsReceived: 5, ItemsAccepted: 2,
				Errors: []itemError{
					{Index: 1, StatusCode: 500, Message: "Internal Server Error"},
					{Index: 2, StatusCode: 400, Message: "Field 'name' is required"},
					{Index: 3, StatusCode: 429, Message: "Too many requests"},
				},
			})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans(names(5, "dep")...)))
	ev.waitFor(t, "4 succeeded and 1 dropped", func() bool {
		c := ev.totals(t)
		return c.succeeded == 4 && c.dropped == 1
	})

	reqs := b.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, names(5, "dep"), lineNames(t, reqs[0].lines))
	require.Equal(t, []string{"dep-001", "dep-003"}, lineNames(t, reqs[1].lines), "only the retryable items are sent again")

	require.EqualValues(t, 1, ev.counter(t, metricDropped, code(attrDropCode, "400")))
	require.EqualValues(t, 1, ev.counter(t, metricRetried, code(attrRetryCode, "500")))
	require.EqualValues(t, 1, ev.counter(t, metricRetried, code(attrRetryCode, "429")))
	require.Equal(t, counts{succeeded: 4, dropped: 1, retried: 2}, ev.totals(t))
}

func Test429RetryAfterHTTPDateIsHonoured(t *testing.T) {
	var retryAt atomic.Int64
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			date := time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
			at, err := http.ParseTime(date)
			if err != nil {
				panic(err)
			}
			retryAt.Store(at.UnixNano())
			w.Header().Set("Retry-After", date)
			answerJSON(w, http.StatusTooManyRequests, trackResponse{ItemsReceived: len(r.lines)})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "dep-b")))
	ev.waitFor(t, "2 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 2 })

	reqs := b.requests()
	require.Len(t, reqs, 2)
	require.False(t, reqs[1].at.Before(time.Unix(0, retryAt.Load())),
		"the retry came at %s, before the Retry-After date %s", reqs[1].at, time.Unix(0, retryAt.Load()))
	require.Equal(t, []string{"dep-a", "dep-b"}, lineNames(t, reqs[1].lines))
	require.EqualValues(t, 2, ev.counter(t, metricRetried, code(attrRetryCode, "429")))
	require.Equal(t, counts{succeeded: 2, retried: 2}, ev.totals(t))
}

func Test439Retried(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, 439, trackResponse{ItemsReceived: len(r.lines)})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "srv-b")))
	ev.waitFor(t, "2 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 2 })
	reqs := b.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, lineNames(t, reqs[0].lines), lineNames(t, reqs[1].lines))
	require.EqualValues(t, 2, ev.counter(t, metricRetried, code(attrRetryCode, "439")))
	require.Equal(t, counts{succeeded: 2, retried: 2}, ev.totals(t))
}

func Test402DroppedPermanently(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		answerJSON(w, http.StatusPaymentRequired, trackResponse{ItemsReceived: len(r.lines)})
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "srv-b", "srv-c")))
	ev.waitFor(t, "3 dropped", func() bool { return ev.counter(t, metricDropped, nil) == 3 })
	require.EqualValues(t, 2, ev.counter(t, metricDropped, map[string]string{attrDropCode: "402", attrTelemetryType: "REQUEST"}))
	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrDropCode: "402", attrTelemetryType: "DEPENDENCY"}))
	require.Len(t, b.requests(), 1, "a 402 is not retried")
	require.Equal(t, counts{dropped: 3}, ev.totals(t))
}

func Test400DroppedPermanentlyWithoutLoggingTheKey(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		errs := make([]itemError, len(r.lines))
		for i := range errs {
			errs[i] = itemError{Index: i, StatusCode: 400, Message: "Invalid instrumentation key " + strings.ToUpper(testIKey)}
		}
		answerJSON(w, http.StatusBadRequest, trackResponse{ItemsReceived: len(r.lines), Errors: errs})
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "dep-b")))
	ev.waitFor(t, "2 dropped", func() bool { return ev.counter(t, metricDropped, code(attrDropCode, "400")) == 2 })
	require.Len(t, b.requests(), 1, "a 400 without retryable items is not retried")
	require.Equal(t, counts{dropped: 2}, ev.totals(t))

	redacted := false
	for _, e := range ev.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		require.NotContains(t, strings.ToLower(line), testIKey, "a log line holds the instrumentation key")
		redacted = redacted || strings.Contains(line, "<redacted>")
	}
	require.True(t, redacted, "the service's message is logged, redacted")
}

func toString(v any) string { return fmt.Sprintf("%v", v) }

func Test400WithRetryableItemsHandledPerItem(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, http.StatusBadRequest, trackResponse{
				ItemsReceived: 3,
				Errors: []itemError{
					{Index: 0, StatusCode: 400, Message: "bad"},
					{Index: 1, StatusCode: 503, Message: "try later"},
					{Index: 2, StatusCode: 400, Message: "bad"},
				},
			})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans(names(3, "dep")...)))
	ev.waitFor(t, "1 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 1 })
	reqs := b.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, []string{"dep-001"}, lineNames(t, reqs[1].lines))
	require.EqualValues(t, 2, ev.counter(t, metricDropped, code(attrDropCode, "400")))
	require.EqualValues(t, 1, ev.counter(t, metricRetried, code(attrRetryCode, "503")))
	require.Equal(t, counts{succeeded: 1, dropped: 2, retried: 1}, ev.totals(t))
}

func Test500And503RetriedThenDelivered(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		switch n {
		case 0:
			answerJSON(w, http.StatusInternalServerError, trackResponse{})
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable) // no body at all
		default:
			ok(w, r)
		}
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans(names(4, "dep")...)))
	ev.waitFor(t, "4 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 4 })
	reqs := b.requests()
	require.Len(t, reqs, 3)
	for _, r := range reqs {
		require.Equal(t, names(4, "dep"), lineNames(t, r.lines))
	}
	require.EqualValues(t, 4, ev.counter(t, metricRetried, code(attrRetryCode, "500")))
	require.EqualValues(t, 4, ev.counter(t, metricRetried, code(attrRetryCode, "503")))
	require.Equal(t, counts{succeeded: 4, retried: 8}, ev.totals(t))
}

func TestNetworkErrorRetried(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			_ = conn.Close() // no answer at all
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, testConfig(b.url()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "dep-b")))
	ev.waitFor(t, "2 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 2 })
	require.Len(t, b.requests(), 2)
	require.EqualValues(t, 2, ev.counter(t, metricRetried, code(attrRetryCode, codeException)))
	require.Equal(t, counts{succeeded: 2, retried: 2}, ev.totals(t))
}

func TestTimeoutRetried(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			<-r.ctx.Done() // answer only when the client has given up
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	cfg := testConfig(b.url())
	cfg.TimeoutConfig.Timeout = 200 * time.Millisecond
	exp := startTraces(t, ev, cfg)
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a")))
	ev.waitFor(t, "1 succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) == 1 })
	require.Len(t, b.requests(), 2)
	require.EqualValues(t, 1, ev.counter(t, metricRetried, code(attrRetryCode, codeTimeout)))
	require.Equal(t, counts{succeeded: 1, retried: 1}, ev.totals(t))
}

func TestExpiredItemsDroppedWithClientExpired(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	cfg := (*Config)(nil)
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			// While the service is down, the items outlive max_age.
			clock.Add(int64(cfg.MaxAge + time.Minute))
		}
		answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
	})
	cfg = testConfig(b.url())
	ev := newEnv(t)
	exp := newTraces(t, ev, cfg)
	exp.e.now = func() time.Time { return time.Unix(0, clock.Load()) }
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "srv-b")))
	ev.waitFor(t, "2 expired", func() bool { return ev.counter(t, metricDropped, code(attrDropCode, codeExpired)) == 2 })
	require.Len(t, b.requests(), 1, "expired items are not sent")
	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeExpired, attrTelemetryType: "REQUEST"}))
	require.Equal(t, counts{dropped: 2, retried: 2}, ev.totals(t))
}

func TestQueueFullRefusedAndCounted(t *testing.T) {
	release := make(chan struct{})
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		<-release // the service hangs: what was accepted stays in the queue
		ok(w, r)
	})
	ev := newEnv(t)
	cfg := testConfig(b.url())
	one := fakeTraces(spans("dep-a"), testIKey)[0]
	q := cfg.QueueSettings.Get()
	q.QueueSize = int64(2 * (len(one.JSON) + 1)) // bytes: room for two envelopes
	q.Batch = configoptional.None[exporterhelper.BatchConfig]()
	exp := startTraces(t, ev, cfg)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a")))
	err := exp.ConsumeTraces(context.Background(), spans("srv-b", "dep-c"))
	require.ErrorIs(t, err, exporterhelper.ErrQueueIsFull)
	require.Equal(t, exporterhelper.ErrQueueIsFull, err, "the error propagates unchanged")

	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrExporter: exporterID, attrDropCode: codePersistenceCapacity, attrTelemetryType: "REQUEST"}))
	require.EqualValues(t, 1, ev.counter(t, metricDropped, map[string]string{attrExporter: exporterID, attrDropCode: codePersistenceCapacity, attrTelemetryType: "DEPENDENCY"}))

	close(release)
	ev.waitFor(t, "the accepted item delivered", func() bool { return ev.counter(t, metricSucceeded, nil) == 1 })
	stop(t, exp)
	require.Equal(t, counts{succeeded: 1, dropped: 2}, ev.totals(t))
	require.Len(t, b.requests(), 1)
	require.Equal(t, []string{"dep-a"}, lineNames(t, b.requests()[0].lines))
}

func TestRetryDisabledDropsRetryableFailures(t *testing.T) {
	b := newBreeze(t, func(_ int, _ received, w http.ResponseWriter) {
		answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
	})
	ev := newEnv(t)
	cfg := testConfig(b.url())
	cfg.BackOffConfig.Enabled = false
	exp := startTraces(t, ev, cfg)
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "dep-b")))
	ev.waitFor(t, "2 dropped", func() bool { return ev.counter(t, metricDropped, code(attrDropCode, "503")) == 2 })
	require.Len(t, b.requests(), 1)
	require.Equal(t, counts{dropped: 2}, ev.totals(t))
}

func TestShutdownWithoutPersistenceCountsAbandonedRetries(t *testing.T) {
	b := newBreeze(t, func(_ int, _ received, w http.ResponseWriter) {
		answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
	})
	ev := newEnv(t)
	cfg := testConfig(b.url())
	cfg.BackOffConfig.InitialInterval = time.Hour
	cfg.BackOffConfig.MaxInterval = time.Hour
	exp := startTraces(t, ev, cfg)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a", "dep-b", "srv-c")))
	ev.waitFor(t, "3 retried", func() bool { return ev.counter(t, metricRetried, nil) == 3 })
	require.Equal(t, counts{retried: 3}, ev.totals(t))

	stop(t, exp)
	require.EqualValues(t, 3, ev.counter(t, metricDropped, code(attrDropCode, "503")),
		"with an in-memory queue, data waiting for a retry is lost at shutdown, and counted")
	require.Len(t, b.requests(), 1)
}

func TestSynchronousCallAbandonedRetryCounted(t *testing.T) {
	b := newBreeze(t, func(_ int, _ received, w http.ResponseWriter) {
		answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
	})
	ev := newEnv(t)
	cfg := withoutQueue(testConfig(b.url()))
	cfg.BackOffConfig.InitialInterval = time.Hour
	cfg.BackOffConfig.MaxInterval = time.Hour
	exp := startTraces(t, ev, cfg)
	defer stop(t, exp)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := exp.ConsumeTraces(ctx, spans("dep-a", "dep-b"))
	require.Error(t, err, "the retry would come after the caller's deadline")
	require.EqualValues(t, 2, ev.counter(t, metricRetried, code(attrRetryCode, "503")))
	require.EqualValues(t, 2, ev.counter(t, metricDropped, code(attrDropCode, "503")),
		"without a queue the caller got the error: this exporter will not retry the items")
	require.Len(t, b.requests(), 1)
}

func TestNoQueueSynchronousSuccess(t *testing.T) {
	b := newBreeze(t, func(n int, r received, w http.ResponseWriter) {
		if n == 0 {
			answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
			return
		}
		ok(w, r)
	})
	ev := newEnv(t)
	exp := startTraces(t, ev, withoutQueue(testConfig(b.url())))
	defer stop(t, exp)

	require.NoError(t, exp.ConsumeTraces(context.Background(), spans("dep-a")))
	require.Equal(t, counts{succeeded: 1, retried: 1}, ev.totals(t))
	require.Len(t, b.requests(), 2)
}
