package appinsightsexporter

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/zap"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// aiExporter holds what one exporter instance (one signal) shares between the
// exporterhelper callbacks: the transport, the counters, and the requests
// waiting for a retry.
type aiExporter struct {
	conn       connectionInfo
	maxAge     time.Duration
	retryOn    bool
	persistent bool
	logger     *zap.Logger
	counters   *counters
	transport  *transport
	now        func() time.Time

	// cfg keys the delivery report shared by the instances of a component;
	// report is nil when delivery_report is off.
	cfg           *Config
	report        *deliveryReport
	releaseReport sync.Once

	// pending holds, per request token, the envelopes (counted per retry
	// code) that an attempt asked exporterhelper to retry and that have not
	// come back to push yet. Whatever is left when the data can no longer
	// come back (the synchronous call returned, or the exporter shut down)
	// was abandoned: it is counted as dropped, unless the persistent queue
	// keeps it for the next start.
	pendingMu sync.Mutex
	pending   map[uint64]map[string]typeCounts
}

func newAIExporter(cfg *Config, set exporter.Settings, signal string) (*aiExporter, error) {
	conn, err := parseConnectionString(string(cfg.ConnectionString))
	if err != nil {
		return nil, err
	}
	var report *deliveryReport
	if cfg.DeliveryReport.HasValue() {
		report = reports.acquire(cfg, func() *deliveryReport { return newDeliveryReport(conn, cfg, set) })
	}
	c, err := newCounters(set.MeterProvider, set.ID.String(), signal, report)
	if err != nil {
		if report != nil && reports.release(cfg) != nil {
			report.shutdown(context.Background())
		}
		return nil, err
	}
	persistent := cfg.QueueSettings.HasValue() && cfg.QueueSettings.Get().StorageID != nil
	return &aiExporter{
		cfg:        cfg,
		report:     report,
		conn:       conn,
		maxAge:     cfg.MaxAge,
		retryOn:    cfg.BackOffConfig.Enabled,
		persistent: persistent,
		logger:     set.Logger,
		counters:   c,
		transport:  newTransport(conn.trackURL),
		now:        time.Now,
		pending:    map[uint64]map[string]typeCounts{},
	}, nil
}

func (e *aiExporter) start(context.Context, component.Host) error {
	host := ""
	if u, err := url.Parse(e.conn.trackURL); err == nil {
		host = u.Host
	}
	e.logger.Info("Application Insights exporter started",
		zap.String("ingestion_host", host),
		zap.Duration("max_age", e.maxAge),
		zap.Bool("persistent_queue", e.persistent),
		zap.Bool("delivery_report", e.report != nil))
	if e.report != nil {
		e.report.start()
	}
	return nil
}

// release gives up this instance's share of the delivery report; the last
// instance of the component to shut down sends the final report. It runs
// after the instance's shutdown counts, which that report must include.
func (e *aiExporter) release(ctx context.Context) {
	if e.report == nil {
		return
	}
	e.releaseReport.Do(func() {
		if last := reports.release(e.cfg); last != nil {
			last.shutdown(ctx)
		}
	})
}

func (e *aiExporter) shutdown(context.Context) error {
	e.transport.close()
	return nil
}

// queueBatchSettings wires the request type into the sending queue: its
// persistent encoding; sizers use ItemsCount and BytesSize.
func (e *aiExporter) queueBatchSettings() xexporterhelper.QueueBatchSettings {
	return xexporterhelper.QueueBatchSettings{
		Encoding: queueEncoding{onCorrupt: func(items int, err error) {
			e.logger.Error("Dropping a stored request that cannot be decoded",
				zap.Int("items", items), zap.Error(err))
			if items > 0 {
				e.counters.recordDroppedBecause(codeException, reasonStorage, typeCounts{{typ: unknownType}: int64(items)})
			}
		}},
	}
}

func (e *aiExporter) options(cfg *Config) []exporterhelper.Option {
	return []exporterhelper.Option{
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
		exporterhelper.WithTimeout(cfg.TimeoutConfig),
		exporterhelper.WithRetry(cfg.BackOffConfig),
		xexporterhelper.WithQueueBatch(cfg.QueueSettings, e.queueBatchSettings()),
	}
}

// requestHolder is put in the context of a Consume call; the converter fills
// it with the request it builds, so the wrapper can count a refused request
// without converting the data twice.
type requestHolder struct{ req *batchRequest }

type holderKey struct{}

func withHolder(ctx context.Context) (context.Context, *requestHolder) {
	h := &requestHolder{}
	return context.WithValue(ctx, holderKey{}, h), h
}

// newRequest wraps converted envelopes into a request stamped with the
// current time, and hands it to the holder of the Consume call.
func (e *aiExporter) newRequest(ctx context.Context, items []envelope.Item) *batchRequest {
	req := newRequestFromItems(items, e.now().UnixNano())
	if h, ok := ctx.Value(holderKey{}).(*requestHolder); ok {
		h.req = req
	}
	return req
}

// consume runs one Consume call of the exporterhelper exporter and accounts
// for what it refused. The error is returned unchanged.
func (e *aiExporter) consume(ctx context.Context, call func(context.Context) error) error {
	ctx, h := withHolder(ctx)
	err := call(ctx)
	if err == nil || h.req == nil {
		return err
	}
	if errors.Is(err, exporterhelper.ErrQueueIsFull) {
		// block_on_overflow false: the queue refuses new data rather than
		// evicting data already acknowledged. The client gets a retryable
		// error; the refusal is counted here.
		e.counters.recordDropped(codePersistenceCapacity, countTypes(h.req.entries))
		e.logger.Warn("Sending queue is full: refusing data",
			zap.Int("items", len(h.req.entries)))
		return err
	}
	// The call was synchronous (no queue, or wait_for_result): whatever it
	// left waiting for a retry will not be retried by this exporter.
	e.abandon(h.req.token, "the export call returned before the retry")
	return err
}

// abandon counts as dropped what a request left waiting for a retry.
func (e *aiExporter) abandon(token uint64, why string) {
	e.pendingMu.Lock()
	p, ok := e.pending[token]
	delete(e.pending, token)
	e.pendingMu.Unlock()
	if !ok {
		return
	}
	for code, tc := range p {
		e.counters.recordDropped(code, tc)
	}
	e.logger.Warn("Dropping items whose retry was abandoned", zap.String("reason", why), zap.Int("items", pendingItems(p)))
}

// afterShutdown settles what was still waiting for a retry when the
// exporterhelper stopped: kept on disk by a persistent queue (it will be sent
// again after the next start), else lost and counted as dropped.
func (e *aiExporter) afterShutdown() {
	e.pendingMu.Lock()
	pending := e.pending
	e.pending = map[uint64]map[string]typeCounts{}
	e.pendingMu.Unlock()
	total := 0
	for _, p := range pending {
		total += pendingItems(p)
		if !e.persistent {
			for code, tc := range p {
				e.counters.recordDropped(code, tc)
			}
		}
	}
	if total == 0 {
		return
	}
	if e.persistent {
		e.logger.Info("Items waiting for a retry stay in the persistent queue and will be sent after the next start",
			zap.Int("items", total))
		return
	}
	e.logger.Warn("Dropping items waiting for a retry at shutdown (no persistent queue)", zap.Int("items", total))
}

func pendingItems(p map[string]typeCounts) int {
	n := 0
	for _, tc := range p {
		for _, c := range tc {
			n += int(c)
		}
	}
	return n
}

// push is the exporterhelper consume function: it sends one request and
// reports what became of every envelope.
func (e *aiExporter) push(ctx context.Context, r xexporterhelper.Request) error {
	req, ok := r.(*batchRequest)
	if !ok {
		return consumererror.NewPermanent(fmt.Errorf("unexpected request type %T", r))
	}
	// This request is being tried again: it is no longer pending.
	e.pendingMu.Lock()
	delete(e.pending, req.token)
	e.pendingMu.Unlock()

	now := e.now()
	live := req.entries
	if cutoff := now.Add(-e.maxAge).UnixNano(); len(live) > 0 {
		var expired []entry
		kept := make([]entry, 0, len(live))
		for _, en := range live {
			if en.enqueuedAt < cutoff {
				expired = append(expired, en)
			} else {
				kept = append(kept, en)
			}
		}
		if len(expired) > 0 {
			e.counters.recordDropped(codeExpired, countTypes(expired))
			e.logger.Warn("Dropping items older than max_age",
				zap.Int("items", len(expired)), zap.Duration("max_age", e.maxAge))
			live = kept
		}
	}
	if len(live) == 0 {
		return nil
	}

	body, err := encodeBody(live)
	if err != nil {
		e.counters.recordDroppedBecause(codeException, reasonClient, countTypes(live))
		return consumererror.NewPermanent(fmt.Errorf("compressing %d envelope(s): %w", len(live), err))
	}

	a, err := e.transport.post(ctx, body)
	if err != nil {
		code := codeException
		if isTimeout(err) {
			code = codeTimeout
		}
		o := outcome{}
		o.retryAll(code, live...)
		e.logger.Warn("Sending to Application Insights failed",
			zap.Int("items", len(live)), zap.String("code", code), zap.Error(err))
		return e.settle(req, &o, err)
	}
	o := classify(a, live, e.now())
	var cause error
	if a.status != 200 {
		cause = fmt.Errorf("Application Insights answered %d", a.status)
		if len(o.dropped) > 0 || len(o.retry) > 0 || o.note != "" {
			e.logAnswer(a.status, len(live), &o)
		}
	}
	return e.settle(req, &o, cause)
}

// settle records the counts of an attempt and returns the error that makes
// exporterhelper do the right thing: nil when nothing is left to do, a
// permanent error when the request was refused for good, and a
// retryItemsError naming exactly the envelopes to send again.
func (e *aiExporter) settle(req *batchRequest, o *outcome, cause error) error {
	if len(o.succeeded) > 0 {
		e.counters.recordSucceeded(countTypes(o.succeeded))
	}
	for code, es := range o.dropped {
		e.counters.recordDropped(code, countTypes(es))
	}
	if len(o.retry) == 0 {
		if o.permanent {
			return consumererror.NewPermanent(cause)
		}
		// Per-item drops of a partial answer are counted and logged; the
		// request itself is done.
		return nil
	}
	if !e.retryOn {
		// retry_on_failure is disabled: what would be retried is dropped.
		for code, es := range o.retryCodes {
			e.counters.recordDropped(code, countTypes(es))
		}
		return consumererror.NewPermanent(cause)
	}
	p := make(map[string]typeCounts, len(o.retryCodes))
	codes := make([]string, 0, len(o.retryCodes))
	for code, es := range o.retryCodes {
		tc := countTypes(es)
		e.counters.recordRetried(code, tc)
		p[code] = tc
		codes = append(codes, code)
	}
	sort.Strings(codes)
	e.pendingMu.Lock()
	e.pending[req.token] = p
	e.pendingMu.Unlock()

	var err error = &retryItemsError{entries: o.retry, code: strings.Join(codes, ","), cause: cause}
	if o.retryAfter > 0 {
		err = exporterhelper.NewThrottleRetry(err, o.retryAfter)
	}
	return err
}

func (e *aiExporter) logAnswer(status, sent int, o *outcome) {
	fields := []zap.Field{
		zap.Int("status", status),
		zap.Int("sent", sent),
		zap.Int("succeeded", len(o.succeeded)),
		zap.Int("dropped", sumLen(o.dropped)),
		zap.Int("to_retry", len(o.retry)),
	}
	if o.retryAfter > 0 {
		fields = append(fields, zap.Duration("retry_after", o.retryAfter))
	}
	if o.firstMessage != "" {
		fields = append(fields, zap.String("first_error", e.redact(o.firstMessage)))
	}
	if o.note != "" {
		fields = append(fields, zap.String("note", o.note))
	}
	e.logger.Warn("Application Insights did not accept every item", fields...)
}

func sumLen(m map[string][]entry) int {
	n := 0
	for _, es := range m {
		n += len(es)
	}
	return n
}

// redact removes the instrumentation key from a message of the service, and
// bounds its length.
func (e *aiExporter) redact(msg string) string {
	if e.conn.instrumentationKey != "" {
		msg = replaceFold(msg, e.conn.instrumentationKey, "<redacted>")
	}
	const maxLen = 300
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "..."
	}
	return msg
}

// replaceFold replaces every case-insensitive occurrence of old (ASCII) in s.
func replaceFold(s, old, repl string) string {
	lower, lowerOld := strings.ToLower(s), strings.ToLower(old)
	if len(lower) != len(s) || !strings.Contains(lower, lowerOld) {
		return strings.ReplaceAll(s, old, repl)
	}
	var b strings.Builder
	for {
		i := strings.Index(lower, lowerOld)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(repl)
		s, lower = s[i+len(old):], lower[i+len(old):]
	}
}

// Converters from pdata to envelopes (envelope.FromTraces etc. in
// production; tests substitute their own).
type (
	tracesConverter  func(ptrace.Traces, string) []envelope.Item
	logsConverter    func(plog.Logs, string) []envelope.Item
	metricsConverter func(pmetric.Metrics, string) []envelope.Item
)

type tracesExporter struct {
	exporter.Traces
	e *aiExporter
}

func (w *tracesExporter) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if td.SpanCount() == 0 {
		return nil
	}
	return w.e.consume(ctx, func(ctx context.Context) error { return w.Traces.ConsumeTraces(ctx, td) })
}

func (w *tracesExporter) Shutdown(ctx context.Context) error {
	err := w.Traces.Shutdown(ctx)
	w.e.afterShutdown()
	w.e.release(ctx)
	return err
}

type logsExporter struct {
	exporter.Logs
	e *aiExporter
}

func (w *logsExporter) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	if ld.LogRecordCount() == 0 {
		return nil
	}
	return w.e.consume(ctx, func(ctx context.Context) error { return w.Logs.ConsumeLogs(ctx, ld) })
}

func (w *logsExporter) Shutdown(ctx context.Context) error {
	err := w.Logs.Shutdown(ctx)
	w.e.afterShutdown()
	w.e.release(ctx)
	return err
}

type metricsExporter struct {
	exporter.Metrics
	e *aiExporter
}

func (w *metricsExporter) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	if md.DataPointCount() == 0 {
		return nil
	}
	return w.e.consume(ctx, func(ctx context.Context) error { return w.Metrics.ConsumeMetrics(ctx, md) })
}

func (w *metricsExporter) Shutdown(ctx context.Context) error {
	err := w.Metrics.Shutdown(ctx)
	w.e.afterShutdown()
	w.e.release(ctx)
	return err
}

func newTracesExporter(ctx context.Context, set exporter.Settings, cfg *Config, conv tracesConverter) (exporter.Traces, error) {
	e, err := newAIExporter(cfg, set, "traces")
	if err != nil {
		return nil, err
	}
	inner, err := xexporterhelper.NewTracesRequest(ctx, set,
		func(ctx context.Context, td ptrace.Traces) (xexporterhelper.Request, error) {
			return e.newRequest(ctx, conv(td, e.conn.instrumentationKey)), nil
		},
		e.push, e.options(cfg)...)
	if err != nil {
		e.release(ctx)
		return nil, err
	}
	return &tracesExporter{Traces: inner, e: e}, nil
}

func newLogsExporter(ctx context.Context, set exporter.Settings, cfg *Config, conv logsConverter) (exporter.Logs, error) {
	e, err := newAIExporter(cfg, set, "logs")
	if err != nil {
		return nil, err
	}
	inner, err := xexporterhelper.NewLogsRequest(ctx, set,
		func(ctx context.Context, ld plog.Logs) (xexporterhelper.Request, error) {
			return e.newRequest(ctx, conv(ld, e.conn.instrumentationKey)), nil
		},
		e.push, e.options(cfg)...)
	if err != nil {
		e.release(ctx)
		return nil, err
	}
	return &logsExporter{Logs: inner, e: e}, nil
}

func newMetricsExporter(ctx context.Context, set exporter.Settings, cfg *Config, conv metricsConverter) (exporter.Metrics, error) {
	e, err := newAIExporter(cfg, set, "metrics")
	if err != nil {
		return nil, err
	}
	inner, err := xexporterhelper.NewMetricsRequest(ctx, set,
		func(ctx context.Context, md pmetric.Metrics) (xexporterhelper.Request, error) {
			return e.newRequest(ctx, conv(md, e.conn.instrumentationKey)), nil
		},
		e.push, e.options(cfg)...)
	if err != nil {
		e.release(ctx)
		return nil, err
	}
	return &metricsExporter{Metrics: inner, e: e}, nil
}
