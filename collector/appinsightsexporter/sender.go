package appinsightsexporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxResponseBody bounds how much of an answer is read. An answer listing an
// error for each of a few thousand envelopes fits.
const maxResponseBody = 4 << 20

// retryableStatus reports whether the ingestion service asks for a resend
// with this status (for the whole request or for one item).
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, // 408
		http.StatusTooManyRequests,     // 429
		439,                            // daily quota exceeded for now (Breeze "too many requests over extended time")
		http.StatusInternalServerError, // 500
		http.StatusBadGateway,          // 502
		http.StatusServiceUnavailable,  // 503
		http.StatusGatewayTimeout:      // 504
		return true
	}
	return false
}

// transport posts gzip-compressed newline-delimited envelopes to the
// ingestion service.
type transport struct {
	client *http.Client
	url    string
}

func newTransport(trackURL string) *transport {
	base, _ := http.DefaultTransport.(*http.Transport)
	var rt http.RoundTripper = http.DefaultTransport
	if base != nil {
		rt = base.Clone()
	}
	// No client-wide timeout: each attempt is bounded by the context that
	// exporterhelper's timeout sender gives it.
	return &transport{client: &http.Client{Transport: rt}, url: trackURL}
}

func (t *transport) close() { t.client.CloseIdleConnections() }

var gzipPool = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

// encodeBody gzips the envelopes, one per line, each followed by a newline.
func encodeBody(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(zw)
	zw.Reset(&buf)
	for _, e := range entries {
		if _, err := zw.Write(e.json); err != nil {
			return nil, err
		}
		if _, err := zw.Write([]byte{'\n'}); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// answer is what one attempt got back.
type answer struct {
	status  int
	header  http.Header
	body    []byte
	bodyErr error
}

// post sends the body. An error means no HTTP answer was received.
func (t *transport) post(ctx context.Context, body []byte) (*answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-json-stream")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	a := &answer{status: resp.StatusCode, header: resp.Header}
	a.body, a.bodyErr = io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	// Drain what is left so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	return a, nil
}

// isTimeout tells a timed-out attempt (CLIENT_TIMEOUT) from another network
// failure (CLIENT_EXCEPTION).
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (the ingestion service sends a date). It returns 0 when absent, invalid or
// in the past.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// trackResponse is the ingestion service's answer body.
type trackResponse struct {
	ItemsReceived int         `json:"itemsReceived"`
	ItemsAccepted int         `json:"itemsAccepted"`
	Errors        []itemError `json:"errors"`
}

type itemError struct {
	Index      int    `json:"index"`
	StatusCode int    `json:"statusCode"`
	Message    string `json:"message"`
}

// outcome is the fate of each sent envelope after one attempt.
type outcome struct {
	succeeded []entry
	// dropped maps a drop_code to the envelopes it drops.
	dropped map[string][]entry
	// retry lists the envelopes to send again, in the order they were sent;
	// retryCodes groups them by retry_code.
	retry      []entry
	retryCodes map[string][]entry
	// permanent is set when the request as a whole was refused for good.
	permanent bool
	// retryAfter is the wait the service asked for (0: none).
	retryAfter time.Duration
	// firstMessage is one per-item error message from the service, for the
	// log (not redacted yet).
	firstMessage string
	// note explains anything odd about the answer, for the log.
	note string
}

func (o *outcome) drop(code string, es ...entry) {
	if o.dropped == nil {
		o.dropped = map[string][]entry{}
	}
	o.dropped[code] = append(o.dropped[code], es...)
}

func (o *outcome) retryAll(code string, es ...entry) {
	if o.retryCodes == nil {
		o.retryCodes = map[string][]entry{}
	}
	o.retryCodes[code] = append(o.retryCodes[code], es...)
	o.retry = append(o.retry, es...)
}

// classify decides, from the answer to one POST of sent, which envelopes
// succeeded, which are dropped (by code) and which must be sent again.
func classify(a *answer, sent []entry, now time.Time) outcome {
	var o outcome
	status := strconv.Itoa(a.status)
	switch {
	case a.status == http.StatusOK:
		o.succeeded = sent

	case a.status == http.StatusPartialContent:
		resp, err := parseTrackResponse(a)
		if err != nil {
			// Resending would duplicate the envelopes that were accepted, and
			// which were is unknown: send nothing again, and count none as
			// succeeded since none is known to be.
			o.drop(status, sent...)
			o.note = "unreadable 206 answer: its envelopes are not resent and are counted as dropped with drop_code 206, though some were probably accepted"
			return o
		}
		o.perItem(resp, sent, false)
		o.retryAfter = parseRetryAfter(a.header, now)

	case a.status == http.StatusBadRequest:
		// A 400 may list per-item errors, some of them retryable: then it is
		// handled per item; the envelopes it does not list were not accepted
		// (the request was refused) and are dropped with 400.
		resp, err := parseTrackResponse(a)
		if err == nil && hasRetryable(resp, len(sent)) {
			o.perItem(resp, sent, true)
			o.retryAfter = parseRetryAfter(a.header, now)
			return o
		}
		o.drop(status, sent...)
		o.permanent = true
		if err == nil {
			o.firstMessage = firstMessage(resp)
		}

	case retryableStatus(a.status):
		o.retryAll(status, sent...)
		o.retryAfter = parseRetryAfter(a.header, now)

	default:
		// 401, 402 (daily cap), 403, 404, 413, other 3xx/4xx/5xx...
		o.drop(status, sent...)
		o.permanent = true
		if resp, err := parseTrackResponse(a); err == nil {
			o.firstMessage = firstMessage(resp)
		}
	}
	return o
}

func parseTrackResponse(a *answer) (*trackResponse, error) {
	if a.bodyErr != nil {
		return nil, a.bodyErr
	}
	var resp trackResponse
	if err := json.Unmarshal(a.body, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func hasRetryable(resp *trackResponse, n int) bool {
	for _, e := range resp.Errors {
		if e.Index >= 0 && e.Index < n && retryableStatus(e.StatusCode) {
			return true
		}
	}
	return false
}

func firstMessage(resp *trackResponse) string {
	for _, e := range resp.Errors {
		if e.Message != "" {
			return e.Message
		}
	}
	return ""
}

// perItem applies a per-item answer: listed envelopes are retried (retryable
// status) or dropped (by their status); unlisted ones succeeded, or, when
// unlistedRefused, are dropped with the answer's status.
func (o *outcome) perItem(resp *trackResponse, sent []entry, unlistedRefused bool) {
	listed := make([]bool, len(sent))
	ignored := 0
	for _, e := range resp.Errors {
		if e.Index < 0 || e.Index >= len(sent) || listed[e.Index] {
			ignored++
			continue
		}
		listed[e.Index] = true
		if o.firstMessage == "" && e.Message != "" {
			o.firstMessage = e.Message
		}
		code := e.StatusCode
		if retryableStatus(code) {
			o.retryAll(strconv.Itoa(code), sent[e.Index])
			continue
		}
		if code == 0 {
			code = http.StatusBadRequest
		}
		o.drop(strconv.Itoa(code), sent[e.Index])
	}
	for i, e := range sent {
		if listed[i] {
			continue
		}
		if unlistedRefused {
			o.drop(strconv.Itoa(http.StatusBadRequest), e)
		} else {
			o.succeeded = append(o.succeeded, e)
		}
	}
	var notes []string
	if ignored > 0 {
		notes = append(notes, fmt.Sprintf("%d error(s) with an index out of range or repeated were ignored", ignored))
	}
	if resp.ItemsReceived != 0 && resp.ItemsReceived != len(sent) {
		notes = append(notes, fmt.Sprintf("the service reports %d item(s) received of %d sent", resp.ItemsReceived, len(sent)))
	}
	o.note = strings.Join(notes, "; ")
}
