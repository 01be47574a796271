package appinsightsexporter

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

var allTypes = []envelope.TelemetryType{
	envelope.Request, envelope.Dependency, envelope.Trace,
	envelope.Exception, envelope.CustomEvent, envelope.CustomMetric,
}

var idSeq int

// randomRequest makes n envelopes with unique ids and random sizes.
func randomRequest(rng *rand.Rand, n, maxLen int) *batchRequest {
	entries := make([]entry, n)
	for i := range entries {
		idSeq++
		id := fmt.Sprintf(`{"id":%d}`, idSeq)
		pad := rng.IntN(maxLen)
		js := append([]byte(id), bytes.Repeat([]byte{' '}, pad)...)
		entries[i] = entry{
			typ:        allTypes[rng.IntN(len(allTypes))],
			json:       js,
			enqueuedAt: 1_700_000_000_000_000_000 + rng.Int64N(1_000_000_000_000),
		}
	}
	return newBatchRequest(entries)
}

func cloneEntries(es []entry) []entry {
	out := make([]entry, len(es))
	for i, e := range es {
		out[i] = entry{typ: e.typ, json: append([]byte(nil), e.json...), enqueuedAt: e.enqueuedAt}
	}
	return out
}

func requireSameEntries(t *testing.T, want, got []entry) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].typ, got[i].typ, "entry %d", i)
		require.Equal(t, string(want[i].json), string(got[i].json), "entry %d", i)
		require.Equal(t, want[i].enqueuedAt, got[i].enqueuedAt, "entry %d", i)
	}
}

func sizeIn(szt exporterhelper.RequestSizerType, r *batchRequest) int {
	if szt == exporterhelper.RequestSizerTypeItems {
		return r.ItemsCount()
	}
	return r.BytesSize()
}

// TestMergeSplitInvariants checks, over random requests and limits, the
// contract of Request.MergeSplit as the batcher relies on it.
func TestMergeSplitInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	sizers := []exporterhelper.RequestSizerType{exporterhelper.RequestSizerTypeItems, exporterhelper.RequestSizerTypeBytes}
	for iter := 0; iter < 3000; iter++ {
		szt := sizers[rng.IntN(2)]
		a := randomRequest(rng, rng.IntN(12), 200)
		var b *batchRequest
		if rng.IntN(4) > 0 {
			b = randomRequest(rng, rng.IntN(40), 200)
		}
		maxSize := 0
		if rng.IntN(6) > 0 {
			if szt == exporterhelper.RequestSizerTypeItems {
				maxSize = 1 + rng.IntN(15)
			} else {
				maxSize = 20 + rng.IntN(800)
			}
		}
		aBefore := cloneEntries(a.entries)
		var bBefore []entry
		var other xexporterhelper.Request
		if b != nil {
			bBefore = cloneEntries(b.entries)
			other = b
		}

		out, err := a.MergeSplit(context.Background(), maxSize, szt, other)
		require.NoError(t, err)
		msg := fmt.Sprintf("iter %d sizer %s max %d a=%d b=%d", iter, szt.String(), maxSize, len(aBefore), len(bBefore))

		// Neither input is modified.
		requireSameEntries(t, aBefore, a.entries)
		if b != nil {
			requireSameEntries(t, bBefore, b.entries)
		}
		require.NotEmpty(t, out, msg)

		// Every envelope comes out exactly once.
		want := map[string]int{}
		for _, e := range append(append([]entry(nil), aBefore...), bBefore...) {
			want[string(e.json)]++
		}
		got := map[string]int{}
		reqs := make([]*batchRequest, len(out))
		for i, o := range out {
			r, ok := o.(*batchRequest)
			require.True(t, ok)
			reqs[i] = r
			require.Equal(t, sizeOf(r.entries), r.BytesSize(), "cached size, %s", msg)
			require.Equal(t, len(r.entries), r.ItemsCount())
			for _, e := range r.entries {
				got[string(e.json)]++
			}
			if len(out) > 1 {
				require.NotEmpty(t, r.entries, "no empty request among several, %s", msg)
			}
		}
		require.Equal(t, want, got, msg)

		if maxSize == 0 {
			require.Len(t, out, 1, msg)
			requireSameEntries(t, append(append([]entry(nil), aBefore...), bBefore...), reqs[0].entries)
			continue
		}

		// No request exceeds maxSize, unless it is one envelope too big alone.
		for i, r := range reqs {
			if sizeIn(szt, r) > maxSize {
				require.Len(t, r.entries, 1, "request %d of size %d over %d, %s", i, sizeIn(szt, r), maxSize, msg)
			}
		}

		// The receiver's envelopes, when they fit, open the first request
		// (the batcher attributes their completion to it).
		merged := len(aBefore) > 0 && len(bBefore) > 0
		if merged && sizeIn(szt, newBatchRequest(aBefore)) <= maxSize {
			require.GreaterOrEqual(t, len(reqs[0].entries), len(aBefore), msg)
			requireSameEntries(t, aBefore, reqs[0].entries[:len(aBefore)])
		}

		// The last request is the smallest; only the first, when it holds the
		// receiver's envelopes, may be smaller (bytes sizer only).
		last := sizeIn(szt, reqs[len(reqs)-1])
		for i := 0; i < len(reqs)-1; i++ {
			if i == 0 && merged && szt == exporterhelper.RequestSizerTypeBytes {
				continue
			}
			require.LessOrEqual(t, last, sizeIn(szt, reqs[i]), "request %d smaller than the last, %s", i, msg)
		}

		// Requests do not share backing arrays: appending to one cannot
		// change another.
		for i, r := range reqs {
			if len(reqs) < 2 {
				break
			}
			before := cloneEntries(reqs[(i+1)%len(reqs)].entries)
			_ = append(r.entries, entry{json: []byte("x")})
			requireSameEntries(t, before, reqs[(i+1)%len(reqs)].entries)
		}
	}
}

type otherRequest struct{ xexporterhelper.Request }

func TestMergeSplitRefusesForeignRequestWithoutMutation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a := randomRequest(rng, 5, 50)
	before := cloneEntries(a.entries)
	_, err := a.MergeSplit(context.Background(), 3, exporterhelper.RequestSizerTypeItems, otherRequest{})
	require.Error(t, err)
	requireSameEntries(t, before, a.entries)
}

func TestMergeSplitOversizedEnvelopeGoesAlone(t *testing.T) {
	big := entry{typ: envelope.Trace, json: bytes.Repeat([]byte("x"), 500)}
	small := entry{typ: envelope.Trace, json: []byte("{}")}
	r := newBatchRequest([]entry{small, big, small})
	out, err := r.MergeSplit(context.Background(), 100, exporterhelper.RequestSizerTypeBytes, nil)
	require.NoError(t, err)
	require.Len(t, out, 3)
	var sizes []int
	for _, o := range out {
		sizes = append(sizes, o.BytesSize())
	}
	require.Contains(t, sizes, 501)
	require.Equal(t, 3, sizes[len(sizes)-1])
}

func TestOnErrorNarrowsToRetryableItems(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := randomRequest(rng, 5, 10)
	retry := []entry{r.entries[1], r.entries[3]}
	err := &retryItemsError{entries: retry, code: "500", cause: fmt.Errorf("partial")}

	narrowed := r.OnError(exporterhelper.NewThrottleRetry(err, 0)).(*batchRequest)
	requireSameEntries(t, retry, narrowed.entries)
	require.Equal(t, sizeOf(retry), narrowed.BytesSize())
	require.Equal(t, r.token, narrowed.token, "the retry keeps the request's token")

	require.Same(t, r, r.OnError(fmt.Errorf("other")), "other errors apply to the whole request")
}
