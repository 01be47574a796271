package appinsightsexporter

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		require.Equal(t, tc.want, parseRetryAfter(h, now), "Retry-After %q", tc.value)
	}
}

func sentEntries(n int) []entry {
	es := make([]entry, n)
	for i := range es {
		es[i] = entry{typ: envelope.Trace, json: []byte{byte('a' + i)}}
	}
	return es
}

func jsonAnswer(t *testing.T, status int, body any) *answer {
	b, err := json.Marshal(body)
	require.NoError(t, err)
	return &answer{status: status, header: http.Header{}, body: b}
}

func droppedCount(o outcome) int { return sumLen(o.dropped) }

func TestClassify(t *testing.T) {
	now := time.Now()
	sent := sentEntries(4)

	t.Run("200 all succeeded", func(t *testing.T) {
		o := classify(jsonAnswer(t, 200, trackResponse{ItemsReceived: 4, ItemsAccepted: 4}), sent, now)
		require.Len(t, o.succeeded, 4)
		require.Zero(t, droppedCount(o))
		require.Empty(t, o.retry)
		require.False(t, o.permanent)
	})

	t.Run("206 per item; bad indices ignored", func(t *testing.T) {
		a := jsonAnswer(t, 206, trackResponse{ItemsReceived: 4, ItemsAccepted: 1, Errors: []itemError{
			{Index: 0, StatusCode: 408}, {Index: 2, StatusCode: 413}, {Index: 2, StatusCode: 500},
			{Index: 9, StatusCode: 500}, {Index: -1, StatusCode: 500}, {Index: 3, StatusCode: 504},
		}})
		a.header.Set("Retry-After", "3")
		o := classify(a, sent, now)
		require.Equal(t, []entry{sent[1]}, o.succeeded)
		require.Equal(t, []entry{sent[0], sent[3]}, o.retry)
		require.Len(t, o.retryCodes["408"], 1)
		require.Len(t, o.retryCodes["504"], 1)
		require.Equal(t, []entry{sent[2]}, o.dropped["413"])
		require.Equal(t, 3*time.Second, o.retryAfter)
		require.Contains(t, o.note, "3 error(s)")
		require.False(t, o.permanent)
	})

	t.Run("unreadable 206 is neither resent nor counted as succeeded", func(t *testing.T) {
		o := classify(&answer{status: 206, header: http.Header{}, body: []byte("<html>")}, sent, now)
		require.Empty(t, o.succeeded)
		require.Empty(t, o.retry)
		require.Len(t, o.dropped["206"], 4)
		require.NotEmpty(t, o.note)
		o = classify(&answer{status: 206, header: http.Header{}, bodyErr: errors.New("reset")}, sent, now)
		require.Len(t, o.dropped["206"], 4)
	})

	for _, status := range []int{408, 429, 439, 500, 502, 503, 504} {
		o := classify(jsonAnswer(t, status, trackResponse{}), sent, now)
		require.Len(t, o.retry, 4, "status %d", status)
		require.Empty(t, o.succeeded)
		require.Zero(t, droppedCount(o))
	}

	for _, status := range []int{301, 400, 401, 402, 403, 404, 413, 501} {
		o := classify(jsonAnswer(t, status, trackResponse{}), sent, now)
		require.True(t, o.permanent, "status %d", status)
		require.Len(t, o.dropped[strconv.Itoa(status)], 4, "status %d", status)
		require.Empty(t, o.retry)
	}

	t.Run("400 with retryable items: unlisted items were refused", func(t *testing.T) {
		o := classify(jsonAnswer(t, 400, trackResponse{ItemsReceived: 4, Errors: []itemError{
			{Index: 1, StatusCode: 429}, {Index: 2, StatusCode: 400},
		}}), sent, now)
		require.Empty(t, o.succeeded)
		require.Equal(t, []entry{sent[1]}, o.retry)
		require.Len(t, o.dropped["400"], 3)
		require.False(t, o.permanent)
	})
}

func TestRedact(t *testing.T) {
	e := &aiExporter{conn: connectionInfo{instrumentationKey: testIKey}}
	require.Equal(t, "key <redacted> is bad, <redacted>", e.redact("key "+testIKey+" is bad, "+"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"))
	long := e.redact(string(make([]byte, 1000)))
	require.Len(t, long, 303)
}
