package appinsightsexporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

func TestEncodingRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	enc := queueEncoding{}
	for iter := 0; iter < 300; iter++ {
		r := randomRequest(rng, rng.IntN(30), 3000)
		if len(r.entries) > 0 && rng.IntN(3) == 0 {
			// A type this version has no code for travels by name.
			r.entries[0].typ = envelope.TelemetryType("AVAILABILITY")
		}
		if len(r.entries) > 1 && rng.IntN(3) == 0 {
			r.entries[1].json = nil // empty envelope
		}
		r = newBatchRequest(r.entries) // sizes after the edits
		data, err := enc.Marshal(context.Background(), r)
		require.NoError(t, err)
		require.Equal(t, byte(encodingVersion), data[0])

		ctx, got, err := enc.Unmarshal(data)
		require.NoError(t, err)
		require.Equal(t, context.Background(), ctx)
		g := got.(*batchRequest)
		requireSameEntries(t, r.entries, g.entries)
		require.Equal(t, r.BytesSize(), g.BytesSize())
		require.Equal(t, r.ItemsCount(), g.ItemsCount())
	}
}

// rawForm is a request as earlier builds stored it (version 1, not deflated).
func rawForm(r *batchRequest) []byte {
	return append([]byte{encodingVersionRaw}, marshalBody(r)...)
}

func mustMarshal(t *testing.T, r *batchRequest) []byte {
	t.Helper()
	data, err := marshalRequest(r)
	require.NoError(t, err)
	return data
}

func TestEncodingIsCompact(t *testing.T) {
	r := newBatchRequest([]entry{
		{typ: envelope.Request, json: []byte(`{"a":1}`), enqueuedAt: 1_700_000_000_000_000_000},
		{typ: envelope.Trace, json: []byte(`{"b":2}`), enqueuedAt: 1_700_000_000_000_000_000},
	})
	// base time (9 bytes varint) + count + 2 x (code + delta + len + 7 bytes JSON)
	require.Equal(t, 9+1+2*(1+1+1+7), len(marshalBody(r)))
}

func TestEncodingDeflatesEnvelopes(t *testing.T) {
	// Envelopes repeat their keys, tags and resource properties: they deflate well, which is
	// what keeps the queue database's page rewrites small.
	var entries []entry
	for i := 0; i < 100; i++ {
		js := fmt.Sprintf(`{"ver":1,"name":"Microsoft.ApplicationInsights.Request","time":"2026-12-02T10:00:00.%07dZ","iKey":"00000000-0000-4000-8000-000000000001","tags":{"ai.operation.id":"%032x","ai.cloud.role":"shop"},"data":{"baseType":"RequestData","baseData":{"ver":2,"id":"%016x","name":"GET /cart","duration":"00:00:00.0050000","responseCode":"200","success":true,"properties":{"tenant.id":"acme","service.name":"shop","seq":"%d"}}}}`, i, i, i, i)
		entries = append(entries, entry{typ: envelope.Request, json: []byte(js), enqueuedAt: 1_700_000_000_000_000_000})
	}
	r := newBatchRequest(entries)
	data := mustMarshal(t, r)
	require.Less(t, len(data)*5, r.BytesSize(), "stored %d bytes for %d of envelopes", len(data), r.BytesSize())
}

func TestEncodingReadsWhatEarlierBuildsStored(t *testing.T) {
	r := randomRequest(rand.New(rand.NewPCG(3, 4)), 12, 500)
	_, got, err := queueEncoding{}.Unmarshal(rawForm(r))
	require.NoError(t, err)
	requireSameEntries(t, r.entries, got.(*batchRequest).entries)
}

func TestEncodingRejectsCorruptData(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	r := randomRequest(rng, 6, 40)

	var corruptItems []int
	enc := queueEncoding{onCorrupt: func(items int, _ error) { corruptItems = append(corruptItems, items) }}
	// Every truncation of the deflated form fails, and reports the item count once readable.
	data := mustMarshal(t, r)
	for n := 0; n < len(data); n++ {
		_, got, err := enc.Unmarshal(data[:n])
		require.Error(t, err, "prefix of %d bytes", n)
		require.Nil(t, got)
	}
	require.Len(t, corruptItems, len(data))
	require.Equal(t, 6, corruptItems[len(corruptItems)-1], "the item count precedes the deflated body")
	corruptItems = nil
	data = rawForm(r)

	// Every truncation of the raw form fails cleanly.
	for n := 0; n < len(data); n++ {
		_, got, err := enc.Unmarshal(data[:n])
		require.Error(t, err, "prefix of %d bytes", n)
		require.Nil(t, got)
	}
	require.Len(t, corruptItems, len(data))
	require.Contains(t, corruptItems, 6, "when the header is readable, the item count is reported")

	// Trailing garbage, an unknown version, an unknown type code.
	_, _, err := enc.Unmarshal(append(append([]byte(nil), data...), 0))
	require.ErrorIs(t, err, errCorrupt)
	bad := append([]byte(nil), data...)
	bad[0] = 99
	_, _, err = enc.Unmarshal(bad)
	require.ErrorIs(t, err, errCorrupt)
	_, _, err = enc.Unmarshal([]byte{encodingVersionRaw, 0, 1, 200, 0, 0})
	require.ErrorIs(t, err, errCorrupt)
	// A huge count with no data behind it is refused before allocating.
	_, _, err = enc.Unmarshal([]byte{encodingVersionRaw, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	require.ErrorIs(t, err, errCorrupt)
}

func TestEncodingCorruptRequestCountedAsDropped(t *testing.T) {
	ev := newEnv(t)
	e, err := newAIExporter(testConfig("http://127.0.0.1:1"), ev.set, "traces")
	require.NoError(t, err)
	data := mustMarshal(t, randomRequest(rand.New(rand.NewPCG(1, 1)), 4, 10))
	_, _, err = e.queueBatchSettings().Encoding.Unmarshal(data[:len(data)-1])
	require.Error(t, err)
	require.EqualValues(t, 4, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeException, attrTelemetryType: unknownType}))
}
