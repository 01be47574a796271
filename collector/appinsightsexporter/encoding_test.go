package appinsightsexporter

import (
	"context"
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

func TestEncodingIsCompact(t *testing.T) {
	r := newBatchRequest([]entry{
		{typ: envelope.Request, json: []byte(`{"a":1}`), enqueuedAt: 1_700_000_000_000_000_000},
		{typ: envelope.Trace, json: []byte(`{"b":2}`), enqueuedAt: 1_700_000_000_000_000_000},
	})
	data := marshalRequest(r)
	// version + base time (9 bytes varint) + count + 2 x (code + delta + len + 7 bytes JSON)
	require.Equal(t, 1+9+1+2*(1+1+1+7), len(data))
}

func TestEncodingRejectsCorruptData(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	r := randomRequest(rng, 6, 40)
	data := marshalRequest(r)

	var corruptItems []int
	enc := queueEncoding{onCorrupt: func(items int, _ error) { corruptItems = append(corruptItems, items) }}

	// Every truncation fails cleanly.
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
	_, _, err = enc.Unmarshal([]byte{encodingVersion, 0, 1, 200, 0, 0})
	require.ErrorIs(t, err, errCorrupt)
	// A huge count with no data behind it is refused before allocating.
	_, _, err = enc.Unmarshal([]byte{encodingVersion, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	require.ErrorIs(t, err, errCorrupt)
}

func TestEncodingCorruptRequestCountedAsDropped(t *testing.T) {
	ev := newEnv(t)
	e, err := newAIExporter(testConfig("http://127.0.0.1:1"), ev.set)
	require.NoError(t, err)
	data := marshalRequest(randomRequest(rand.New(rand.NewPCG(1, 1)), 4, 10))
	_, _, err = e.queueBatchSettings().Encoding.Unmarshal(data[:len(data)-1])
	require.Error(t, err)
	require.EqualValues(t, 4, ev.counter(t, metricDropped, map[string]string{attrDropCode: codeException, attrTelemetryType: unknownType}))
}
