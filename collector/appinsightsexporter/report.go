package appinsightsexporter

import (
	"cmp"
	"context"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/collector/exporter"
	"go.uber.org/zap"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// The delivery report sends, every interval, this exporter's own delivery
// counts to its own Application Insights resource, in the form the Azure
// Monitor SDKs give their customer-facing "SDK stats": one MetricData
// envelope per non-zero series, whose value is the number of items counted
// in the interval (a delta, not a running total). Names, dimension keys and
// code values follow the SDKs (see README.md, "Delivery report").
const (
	// Metric names: the names the SDKs use since SDK stats left preview
	// (preview builds sent preview.item.success.count and so on).
	statSucceeded = "Item_Success_Count"
	statDropped   = "Item_Dropped_Count"
	statRetried   = "Item_Retry_Count"

	// Dimension keys (envelope properties).
	dimLanguage         = "language"
	dimVersion          = "version"
	dimComputeType      = "computeType"
	dimTelemetryType    = "telemetry_type"
	dimTelemetrySuccess = "telemetry_success"
	dimDropCode         = "drop.code"
	dimDropReason       = "drop.reason"
	dimRetryCode        = "retry.code"
	dimRetryReason      = "retry.reason"

	// reportLanguage is the language dimension: that of this exporter.
	reportLanguage = "go"

	// The SDKs' client codes. An HTTP status is its own code ("429").
	sdkCodeException           = "CLIENT_EXCEPTION"
	sdkCodeTimeout             = "CLIENT_TIMEOUT"
	sdkCodePersistenceCapacity = "CLIENT_PERSISTENCE_CAPACITY"
	// sdkCodeExpired is the SDKs' spelling for data dropped for its age
	// (the exporters of Python and JavaScript used it while they dropped
	// expired stored data; today's list has no other).
	sdkCodeExpired = "CLIENT_EXPIRED_DATA"
	sdkCodeUnknown = "UNKNOWN"

	// The SDKs' reasons (drop.reason, retry.reason).
	reasonClient              = "Client exception"
	reasonNetwork             = "Network exception"
	reasonStorage             = "Storage exception"
	reasonTimeout             = "Timeout exception"
	reasonClientTimeout       = "Client timeout"
	reasonPersistenceCapacity = "Client persistence capacity"
	reasonExpired             = "Expired data"
	reasonUnknown             = "Unknown reason"

	// maxReportSeries bounds the series held between two reports. The set
	// is small in practice (3 metrics x the telemetry types x the codes
	// seen), but per-item status codes come from the service: past the
	// bound, a new code is counted under UNKNOWN, so that memory stays
	// bounded and no count is lost.
	maxReportSeries = 1024

	// finalReportTimeout bounds the report sent at shutdown.
	finalReportTimeout = 5 * time.Second
)

// sdkTelemetryTypes are the telemetry_type values the SDKs define; any
// other type (an item of a stored request that could not be decoded) is
// reported as UNKNOWN.
var sdkTelemetryTypes = map[envelope.TelemetryType]bool{
	"AVAILABILITY": true, "CUSTOM_EVENT": true, "CUSTOM_METRIC": true, "DEPENDENCY": true,
	"EXCEPTION": true, "PAGE_VIEW": true, "PERFORMANCE_COUNTER": true, "REQUEST": true,
	"TRACE": true, "UNKNOWN": true,
}

// series is one reported envelope: a metric and its dimensions.
type series struct {
	metric string
	typ    string
	// code and reason are drop.code/drop.reason or retry.code/retry.reason;
	// empty for successes.
	code, reason string
	// success is telemetry_success ("true", "false") of dropped requests and
	// dependencies when the envelope records it; empty otherwise.
	success string
}

// deliveryReport accumulates the counts of one exporter configuration and
// sends them every interval.
type deliveryReport struct {
	iKey      string
	transport *transport
	interval  time.Duration
	// timeout bounds one report.
	timeout time.Duration
	logger  *zap.Logger
	// base holds the dimensions every envelope has: language, version,
	// computeType.
	base map[string]string
	now  func() time.Time
	// newTicker is a seam for tests: it returns the ticks and their stop.
	newTicker func(time.Duration) (<-chan time.Time, func())

	mu sync.Mutex
	// counts holds what was counted and not reported yet.
	counts map[series]int64

	lifeMu  sync.Mutex
	started bool
	stopped bool
	// stop ends the periodic reports; cancel aborts the one under way.
	stop   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func newDeliveryReport(conn connectionInfo, cfg *Config, set exporter.Settings) *deliveryReport {
	timeout := cfg.TimeoutConfig.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	version := set.BuildInfo.Version
	if version == "" {
		version = "unknown"
	}
	return &deliveryReport{
		iKey:      conn.instrumentationKey,
		transport: newTransport(conn.trackURL),
		interval:  cfg.DeliveryReport.Get().Interval,
		timeout:   timeout,
		logger:    set.Logger,
		base: map[string]string{
			dimLanguage:    reportLanguage,
			dimVersion:     version,
			dimComputeType: computeTypeFrom(os.Getenv),
		},
		now: time.Now,
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		counts: map[series]int64{},
	}
}

// computeTypeFrom gives the computeType dimension the way the SDKs detect
// their resource provider from the environment: Kubernetes (AKS_ARM_NAMESPACE_ID
// or KUBERNETES_SERVICE_HOST, which the JavaScript exporter counts as aks),
// App Service, Functions, else unknown. (The SDKs tell a VM by asking the
// instance metadata service; this exporter does not call it.)
func computeTypeFrom(getenv func(string) string) string {
	switch {
	case getenv("AKS_ARM_NAMESPACE_ID") != "" || getenv("KUBERNETES_SERVICE_HOST") != "":
		return "aks"
	case getenv("FUNCTIONS_WORKER_RUNTIME") != "":
		return "functions"
	case getenv("WEBSITE_SITE_NAME") != "":
		return "appsvc"
	}
	return "unknown"
}

// sdkType is the telemetry_type of a class.
func sdkType(t envelope.TelemetryType) string {
	if sdkTelemetryTypes[t] {
		return string(t)
	}
	return sdkCodeUnknown
}

// sdkSuccess is the telemetry_success of a class: only requests and
// dependencies whose envelope records it have one.
func sdkSuccess(cl itemClass) string {
	switch cl.app {
	case appSucceeded:
		return "true"
	case appFailed:
		return "false"
	}
	return ""
}

// httpStatus reads a code that is an HTTP status.
func httpStatus(code string) (int, bool) {
	n, err := strconv.Atoi(code)
	if err != nil || n < 100 || n > 599 {
		return 0, false
	}
	return n, true
}

// statusReason is the SDKs' reason for an HTTP status.
func statusReason(status int) string {
	switch status {
	case 400:
		return "Bad request"
	case 401:
		return "Unauthorized"
	case 402:
		return "Daily quota exceeded"
	case 403:
		return "Forbidden"
	case 404:
		return "Not found"
	case 408:
		return "Request timeout"
	case 413:
		return "Payload too large"
	case 429:
		return "Too many requests"
	case 500:
		return "Internal server error"
	case 502:
		return "Bad gateway"
	case 503:
		return "Service unavailable"
	case 504:
		return "Gateway timeout"
	}
	switch {
	case status >= 400 && status < 500:
		return "Client error 4xx"
	case status >= 500:
		return "Server error 5xx"
	}
	return "status_" + strconv.Itoa(status)
}

// dropCause maps a drop_code of this exporter (the Prometheus attribute,
// unchanged) to the SDKs' drop.code and drop.reason. reason, when not
// empty, is the reason of a local CLIENT_EXCEPTION.
func dropCause(code, reason string) (string, string) {
	switch code {
	case codePersistenceCapacity:
		return sdkCodePersistenceCapacity, reasonPersistenceCapacity
	case codeExpired:
		return sdkCodeExpired, reasonExpired
	case codeTimeout:
		// The SDKs have no CLIENT_TIMEOUT drop code: an item dropped after
		// a timeout is a CLIENT_EXCEPTION ("no response") of that reason.
		return sdkCodeException, reasonTimeout
	case codeException:
		if reason == "" {
			// Without a reason of its own, a CLIENT_EXCEPTION drop is an item
			// whose last attempt failed with a network error (retries off,
			// or the retry abandoned): local failures give their reason.
			reason = reasonNetwork
		}
		return sdkCodeException, reason
	}
	if status, ok := httpStatus(code); ok {
		return code, statusReason(status)
	}
	return sdkCodeUnknown, reasonUnknown
}

// retryCause maps a retry_code of this exporter to the SDKs' retry.code and
// retry.reason.
func retryCause(code string) (string, string) {
	switch code {
	case codeException:
		return sdkCodeException, reasonNetwork
	case codeTimeout:
		return sdkCodeTimeout, reasonClientTimeout
	}
	if status, ok := httpStatus(code); ok {
		return code, statusReason(status)
	}
	return sdkCodeUnknown, reasonUnknown
}

func (r *deliveryReport) addSucceeded(tc typeCounts) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for cl, n := range tc {
		r.addLocked(series{metric: statSucceeded, typ: sdkType(cl.typ)}, n)
	}
}

func (r *deliveryReport) addDropped(code, reason string, tc typeCounts) {
	if r == nil {
		return
	}
	code, reason = dropCause(code, reason)
	r.mu.Lock()
	defer r.mu.Unlock()
	for cl, n := range tc {
		r.addLocked(series{metric: statDropped, typ: sdkType(cl.typ), code: code, reason: reason, success: sdkSuccess(cl)}, n)
	}
}

func (r *deliveryReport) addRetried(code string, tc typeCounts) {
	if r == nil {
		return
	}
	code, reason := retryCause(code)
	r.mu.Lock()
	defer r.mu.Unlock()
	for cl, n := range tc {
		r.addLocked(series{metric: statRetried, typ: sdkType(cl.typ), code: code, reason: reason}, n)
	}
}

func (r *deliveryReport) addLocked(s series, n int64) {
	if n <= 0 {
		return
	}
	if _, ok := r.counts[s]; !ok && len(r.counts) >= maxReportSeries && s.code != "" {
		s.code, s.reason = sdkCodeUnknown, reasonUnknown
	}
	r.counts[s] += n
}

// take removes and returns what was not reported yet.
func (r *deliveryReport) take() map[series]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := r.counts
	r.counts = map[series]int64{}
	return snap
}

// putBack adds counts that were not reported to the next report.
func (r *deliveryReport) putBack(snap map[series]int64, keys []series) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range keys {
		r.addLocked(s, snap[s])
	}
}

// start runs the periodic reports; only the first call does anything.
func (r *deliveryReport) start() {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.cancel, r.done = make(chan struct{}), cancel, make(chan struct{})
	ticks, stopTicker := r.newTicker(r.interval)
	go r.loop(ctx, ticks, stopTicker)
}

func (r *deliveryReport) loop(ctx context.Context, ticks <-chan time.Time, stopTicker func()) {
	defer close(r.done)
	defer stopTicker()
	for {
		select {
		case <-r.stop:
			return
		case <-ticks:
			sctx, cancel := context.WithTimeout(ctx, r.timeout)
			r.send(sctx, false)
			cancel()
		}
	}
}

// shutdown stops the periodic reports, then sends once what was not
// reported yet, with a short timeout: what that last report does not deliver
// is lost, and logged. A report under way is let finish (it is bounded by
// the timeout) unless ctx ends first: cancelling it after the service got it
// would lose the answer, and the final report would count its items again.
func (r *deliveryReport) shutdown(ctx context.Context) {
	r.lifeMu.Lock()
	if r.stopped {
		r.lifeMu.Unlock()
		return
	}
	r.stopped = true
	stop, cancel, done := r.stop, r.cancel, r.done
	r.lifeMu.Unlock()
	if stop != nil {
		close(stop)
		select {
		case <-done:
		case <-ctx.Done():
			cancel()
			<-done
		}
		cancel()
	}
	fctx, fcancel := context.WithTimeout(ctx, min(r.timeout, finalReportTimeout))
	defer fcancel()
	r.send(fctx, true)
	r.transport.close()
}

// send reports what was counted since the last report, in one attempt. The
// statistics envelopes do not go through push: they are never counted as
// items (the SDKs leave their own statistics out too). Counts the service
// did not take are kept for the next report, unless this is the last one.
// Like the data, a report is delivered at least once: when its answer is
// lost (a timeout or a connection cut after the service got it), its counts
// go out again with the next one.
func (r *deliveryReport) send(ctx context.Context, final bool) {
	snap := r.take()
	if len(snap) == 0 {
		return
	}
	keys := make([]series, 0, len(snap))
	for s := range snap {
		keys = append(keys, s)
	}
	slices.SortFunc(keys, compareSeries)

	now := r.now()
	entries := make([]entry, len(keys))
	for i, s := range keys {
		it := envelope.Statistic(r.iKey, s.metric, snap[s], now, r.properties(s))
		entries[i] = entry{typ: it.Type, json: it.JSON}
	}

	var again []int
	refused := 0
	fields := []zap.Field{zap.Int("envelopes", len(keys))}
	body, err := encodeBody(entries)
	if err == nil {
		var a *answer
		if a, err = r.transport.post(ctx, body); err == nil {
			again, refused = unaccepted(a, len(keys))
			fields = append(fields, zap.Int("status", a.status))
		}
	}
	if err != nil {
		again = make([]int, len(keys))
		for i := range again {
			again[i] = i
		}
		fields = append(fields, zap.Error(err))
	}
	if refused > 0 {
		r.logger.Warn("The service refused some delivery report envelopes: their counts are not reported",
			append(fields, zap.Int("refused", refused))...)
	}
	if len(again) == 0 {
		r.logger.Debug("Delivery report sent", fields...)
		return
	}
	fields = append(fields, zap.Int("not_delivered", len(again)))
	if final {
		r.logger.Warn("The last delivery report was not delivered: its counts are lost", fields...)
		return
	}
	kept := make([]series, len(again))
	for i, idx := range again {
		kept[i] = keys[idx]
	}
	r.putBack(snap, kept)
	r.logger.Warn("Delivery report not delivered: its counts are added to the next report", fields...)
}

// unaccepted tells, from the answer to a report of n envelopes, which
// envelopes to send again (their counts go to the next report) and how many
// the service refused for good. Any failure keeps everything, except an
// unreadable 206: some envelopes were accepted and which is unknown, so
// resending would count them twice; they are given up.
func unaccepted(a *answer, n int) (again []int, refused int) {
	switch a.status {
	case http.StatusOK:
		return nil, 0
	case http.StatusPartialContent:
		resp, err := parseTrackResponse(a)
		if err != nil {
			return nil, n
		}
		listed := make([]bool, n)
		for _, e := range resp.Errors {
			if e.Index < 0 || e.Index >= n || listed[e.Index] {
				continue
			}
			listed[e.Index] = true
			if retryableStatus(e.StatusCode) {
				again = append(again, e.Index)
			} else {
				refused++
			}
		}
		sort.Ints(again)
		return again, refused
	}
	again = make([]int, n)
	for i := range again {
		again[i] = i
	}
	return again, 0
}

// properties are the dimensions of one series' envelope.
func (r *deliveryReport) properties(s series) map[string]string {
	p := make(map[string]string, len(r.base)+4)
	for k, v := range r.base {
		p[k] = v
	}
	p[dimTelemetryType] = s.typ
	switch s.metric {
	case statDropped:
		p[dimDropCode], p[dimDropReason] = s.code, s.reason
		if s.success != "" {
			p[dimTelemetrySuccess] = s.success
		}
	case statRetried:
		p[dimRetryCode], p[dimRetryReason] = s.code, s.reason
	}
	return p
}

func compareSeries(a, b series) int {
	return cmp.Or(
		cmp.Compare(a.metric, b.metric),
		cmp.Compare(a.typ, b.typ),
		cmp.Compare(a.code, b.code),
		cmp.Compare(a.reason, b.reason),
		cmp.Compare(a.success, b.success),
	)
}

// reports holds the delivery report of each exporter configuration.
//
// The collector creates one exporter instance per signal for a component,
// and hands each the same *Config: the instances of a component share one
// report, keyed by that pointer, so that the tenant gets one request per
// interval with one envelope per series, as from an SDK. Each counted item
// is recorded once, by the instance that counted it, into the shared counts,
// and each count is taken out of them by exactly one report: nothing is
// reported twice. (Instances built with distinct *Config values, as in
// tests, get a report each, still counting each item once.) The report
// starts with the first instance that starts and ends, with its final
// report, when the last instance shuts down, after that instance's own
// shutdown counts.
var reports = reportRegistry{m: map[*Config]*sharedReport{}}

type reportRegistry struct {
	mu sync.Mutex
	m  map[*Config]*sharedReport
}

type sharedReport struct {
	r    *deliveryReport
	refs int
}

// acquire returns the report of cfg, creating it for the first user.
func (g *reportRegistry) acquire(cfg *Config, create func() *deliveryReport) *deliveryReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	sr, ok := g.m[cfg]
	if !ok {
		sr = &sharedReport{r: create()}
		g.m[cfg] = sr
	}
	sr.refs++
	return sr.r
}

// release drops one user of cfg's report and returns the report when that
// was the last user (the caller shuts it down), else nil.
func (g *reportRegistry) release(cfg *Config) *deliveryReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	sr, ok := g.m[cfg]
	if !ok {
		return nil
	}
	sr.refs--
	if sr.refs > 0 {
		return nil
	}
	delete(g.m, cfg)
	return sr.r
}
