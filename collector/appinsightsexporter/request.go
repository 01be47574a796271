package appinsightsexporter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// entry is one converted envelope waiting to be sent.
type entry struct {
	typ envelope.TelemetryType
	// json is the compact envelope, without a trailing newline. It is never
	// modified once built, so requests may share it.
	json []byte
	// enqueuedAt is when the item entered the exporter (Unix nanoseconds). It
	// survives merges, splits and restarts: max_age is measured from it.
	enqueuedAt int64
}

// size is the entry's share of the request body: the JSON and its newline.
func (e entry) size() int { return len(e.json) + 1 }

// batchRequest is the exporterhelper request of this exporter: a batch of
// already-converted envelopes.
type batchRequest struct {
	entries []entry
	// bytes caches the sum of entry sizes.
	bytes int
	// token identifies the request across the retries of exporterhelper (OnError
	// hands it on), so that the exporter can tell when a request it asked to
	// be retried was abandoned instead. It is not persisted.
	token uint64
}

var (
	_ xexporterhelper.Request             = (*batchRequest)(nil)
	_ xexporterhelper.RequestErrorHandler = (*batchRequest)(nil)
)

var tokenSeq atomic.Uint64

func newBatchRequest(entries []entry) *batchRequest {
	r := &batchRequest{entries: entries, token: tokenSeq.Add(1)}
	for _, e := range entries {
		r.bytes += e.size()
	}
	return r
}

// newRequestFromItems wraps freshly converted items, all enqueued at now.
func newRequestFromItems(items []envelope.Item, now int64) *batchRequest {
	entries := make([]entry, len(items))
	for i, it := range items {
		entries[i] = entry{typ: it.Type, json: it.JSON, enqueuedAt: now}
	}
	return newBatchRequest(entries)
}

// ItemsCount is the number of envelopes.
func (r *batchRequest) ItemsCount() int { return len(r.entries) }

// BytesSize is the size of the uncompressed newline-delimited body.
func (r *batchRequest) BytesSize() int { return r.bytes }

// OnError narrows the request to the items a retryable failure names: those
// the service asked to be resent. Any other error applies to the whole request.
func (r *batchRequest) OnError(err error) xexporterhelper.Request {
	var re *retryItemsError
	if errors.As(err, &re) {
		return &batchRequest{entries: re.entries, bytes: sizeOf(re.entries), token: r.token}
	}
	return r
}

func sizeOf(entries []entry) int {
	n := 0
	for _, e := range entries {
		n += e.size()
	}
	return n
}

// MergeSplit appends other's envelopes to r's and cuts the result into
// requests of at most maxSize (items or bytes, per szt). Neither r nor other
// is modified: the result is made of new requests. r's envelopes all stay in
// the first returned request (the batcher attributes r's completion to it);
// they fit, as the batcher only keeps a request smaller than min_size <=
// max_size. An envelope bigger than maxSize on its own goes alone. The
// smallest request is returned last, except that the first one (holding r's
// envelopes) is never moved; with the items sizer every request but the last
// is full, so the last is always the smallest.
func (r *batchRequest) MergeSplit(_ context.Context, maxSize int, szt exporterhelper.RequestSizerType, other xexporterhelper.Request) ([]xexporterhelper.Request, error) {
	var o *batchRequest
	if other != nil {
		var ok bool
		if o, ok = other.(*batchRequest); !ok {
			return nil, fmt.Errorf("cannot merge a %T into a telemux_appinsights request", other)
		}
	}
	var sizeFn func(entry) int
	switch szt {
	case exporterhelper.RequestSizerTypeItems:
		sizeFn = func(entry) int { return 1 }
	case exporterhelper.RequestSizerTypeBytes:
		sizeFn = entry.size
	default:
		if maxSize > 0 {
			return nil, fmt.Errorf("unsupported batch sizer %q", szt.String())
		}
	}

	all := r.entries
	if o != nil && len(o.entries) > 0 {
		all = make([]entry, 0, len(r.entries)+len(o.entries))
		all = append(all, r.entries...)
		all = append(all, o.entries...)
	}
	if maxSize <= 0 {
		return []xexporterhelper.Request{newBatchRequest(all[:len(all):len(all)])}, nil
	}

	// Next-fit packing keeps the order of the envelopes. Sub-slices are capped
	// so that no request can append into another's entries.
	var chunks [][]entry
	var sizes []int
	start, cur := 0, 0
	for i, e := range all {
		s := sizeFn(e)
		if i > start && cur+s > maxSize {
			chunks = append(chunks, all[start:i:i])
			sizes = append(sizes, cur)
			start, cur = i, 0
		}
		cur += s
	}
	chunks = append(chunks, all[start:len(all):len(all)])
	sizes = append(sizes, cur)

	// Move the smallest chunk last. The first chunk stays first when it holds
	// r's envelopes.
	first := 0
	if o != nil && len(o.entries) > 0 && len(r.entries) > 0 {
		first = 1
	}
	last := len(chunks) - 1
	smallest := last
	for i := first; i < last; i++ {
		if sizes[i] < sizes[smallest] {
			smallest = i
		}
	}
	if smallest != last {
		chunk := chunks[smallest]
		chunks = append(chunks[:smallest], chunks[smallest+1:]...)
		chunks = append(chunks, chunk)
	}

	out := make([]xexporterhelper.Request, len(chunks))
	for i, c := range chunks {
		out[i] = newBatchRequest(c)
	}
	return out, nil
}

// retryItemsError is returned when some or all of the sent envelopes must be
// sent again; OnError narrows the request to exactly them. Every retryable
// failure returns one, so that envelopes already accepted, dropped or expired
// are never sent (or counted) twice.
type retryItemsError struct {
	entries []entry
	// code is the retry_code of the failure (an HTTP status, CLIENT_EXCEPTION
	// or CLIENT_TIMEOUT).
	code  string
	cause error
}

func (e *retryItemsError) Error() string {
	return fmt.Sprintf("%d envelope(s) to retry (%s): %v", len(e.entries), e.code, e.cause)
}

func (e *retryItemsError) Unwrap() error { return e.cause }
