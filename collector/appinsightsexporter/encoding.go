package appinsightsexporter

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// The persistent queue stores each request in this compact binary form:
//
//	byte     version: 2, then uvarint item count and the rest deflated;
//	         1 (earlier builds), then the rest as is
//	varint   base enqueuedAt, Unix nanoseconds (the smallest of the items)
//	uvarint  item count
//	per item:
//	  byte     type code (1..6, see typeCodes), or 0 followed by
//	           uvarint length + the type's name for a type this version
//	           does not know
//	  uvarint  enqueuedAt - base, nanoseconds
//	  uvarint  JSON length
//	  bytes    JSON
//
// The context is not stored: Unmarshal returns context.Background().
//
// Why deflate: the queue's database (bbolt) rewrites whole leaf pages, which
// hold up to four stored requests, three times per request (store, dispatch,
// delete). Envelopes compress about 20:1, so each transaction then rewrites a
// few pages instead of hundreds of kilobytes; that costs less than it saves.
const (
	encodingVersion    = 2
	encodingVersionRaw = 1
	// maxInflated bounds what one stored request may inflate to, so a corrupt
	// entry cannot exhaust memory.
	maxInflated = 1 << 30
)

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
	return w
}}

var typeCodes = []envelope.TelemetryType{
	1: envelope.Request,
	2: envelope.Dependency,
	3: envelope.Trace,
	4: envelope.Exception,
	5: envelope.CustomEvent,
	6: envelope.CustomMetric,
}

func typeCode(t envelope.TelemetryType) byte {
	for i := 1; i < len(typeCodes); i++ {
		if typeCodes[i] == t {
			return byte(i)
		}
	}
	return 0
}

// queueEncoding implements exporterhelper.QueueBatchEncoding for batchRequest.
type queueEncoding struct {
	// onCorrupt is told how many items (when the header was readable) a
	// stored request that cannot be decoded held; the queue drops such a
	// request, so the exporter counts them.
	onCorrupt func(items int, err error)
}

var _ exporterhelper.QueueBatchEncoding[xexporterhelper.Request] = queueEncoding{}

func (queueEncoding) Marshal(_ context.Context, req xexporterhelper.Request) ([]byte, error) {
	r, ok := req.(*batchRequest)
	if !ok {
		return nil, fmt.Errorf("cannot encode a %T", req)
	}
	return marshalRequest(r)
}

// marshalRequest writes the version byte, the item count (readable even when
// the rest is corrupt, so a lost request is still counted), then the deflated
// body.
func marshalRequest(r *batchRequest) ([]byte, error) {
	body := marshalBody(r)
	var out bytes.Buffer
	out.Grow(len(body)/8 + 64)
	out.WriteByte(encodingVersion)
	out.Write(binary.AppendUvarint(nil, uint64(len(r.entries))))
	w := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(w)
	w.Reset(&out)
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// marshalBody is everything after the version byte, uncompressed.
func marshalBody(r *batchRequest) []byte {
	var base int64
	if len(r.entries) > 0 {
		base = r.entries[0].enqueuedAt
		for _, e := range r.entries[1:] {
			base = min(base, e.enqueuedAt)
		}
	}
	buf := make([]byte, 0, 2*binary.MaxVarintLen64+r.bytes+len(r.entries)*(1+2*binary.MaxVarintLen64))
	buf = binary.AppendVarint(buf, base)
	buf = binary.AppendUvarint(buf, uint64(len(r.entries)))
	for _, e := range r.entries {
		code := typeCode(e.typ)
		buf = append(buf, code)
		if code == 0 {
			buf = binary.AppendUvarint(buf, uint64(len(e.typ)))
			buf = append(buf, e.typ...)
		}
		buf = binary.AppendUvarint(buf, uint64(e.enqueuedAt-base))
		buf = binary.AppendUvarint(buf, uint64(len(e.json)))
		buf = append(buf, e.json...)
	}
	return buf
}

func (q queueEncoding) Unmarshal(data []byte) (context.Context, xexporterhelper.Request, error) {
	r, count, err := unmarshalRequest(data)
	if err != nil {
		if q.onCorrupt != nil {
			q.onCorrupt(count, err)
		}
		return context.Background(), nil, err
	}
	return context.Background(), r, nil
}

var errCorrupt = errors.New("corrupt stored request")

// unmarshalRequest decodes a stored request. On error it also returns the item
// count from the header when that was readable (else 0).
func unmarshalRequest(data []byte) (*batchRequest, int, error) {
	if len(data) == 0 {
		return nil, 0, fmt.Errorf("%w: empty", errCorrupt)
	}
	switch data[0] {
	case encodingVersionRaw:
		// The storage may reuse its buffer: copy what the request keeps.
		return unmarshalBody(data[1:], true)
	case encodingVersion:
		count, n := binary.Uvarint(data[1:])
		if n <= 0 || count > math.MaxInt32 {
			return nil, 0, fmt.Errorf("%w: bad item count", errCorrupt)
		}
		items := int(count)
		inflater := flate.NewReader(bytes.NewReader(data[1+n:]))
		body, err := io.ReadAll(io.LimitReader(inflater, maxInflated+1))
		if err != nil {
			return nil, items, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		if len(body) > maxInflated {
			return nil, items, fmt.Errorf("%w: inflates beyond %d bytes", errCorrupt, maxInflated)
		}
		// body is ours alone: the entries may point into it.
		r, _, err := unmarshalBody(body, false)
		if err != nil {
			return nil, items, err
		}
		if r.ItemsCount() != items {
			return nil, items, fmt.Errorf("%w: %d items, header says %d", errCorrupt, r.ItemsCount(), items)
		}
		return r, items, nil
	default:
		return nil, 0, fmt.Errorf("%w: unknown version %d", errCorrupt, data[0])
	}
}

// unmarshalBody decodes what follows the version byte, copying each JSON out
// of p when p is not the request's own.
func unmarshalBody(p []byte, copyJSON bool) (*batchRequest, int, error) {
	base, n := binary.Varint(p)
	if n <= 0 {
		return nil, 0, fmt.Errorf("%w: bad base time", errCorrupt)
	}
	p = p[n:]
	count, n := binary.Uvarint(p)
	// Each item takes at least 3 bytes: a bound that also rejects absurd counts.
	if n <= 0 || count > uint64(len(p[n:]))/3 || count > math.MaxInt32 {
		return nil, 0, fmt.Errorf("%w: bad item count", errCorrupt)
	}
	p = p[n:]
	entries := make([]entry, 0, int(count))
	fail := func(what string) (*batchRequest, int, error) {
		return nil, int(count), fmt.Errorf("%w: item %d: %s", errCorrupt, len(entries), what)
	}
	for uint64(len(entries)) < count {
		if len(p) == 0 {
			return fail("truncated")
		}
		code := p[0]
		p = p[1:]
		var typ envelope.TelemetryType
		switch {
		case code == 0:
			l, n := binary.Uvarint(p)
			if n <= 0 || l > uint64(len(p[n:])) {
				return fail("bad type name")
			}
			typ = envelope.TelemetryType(p[n : n+int(l)])
			p = p[n+int(l):]
		case int(code) < len(typeCodes):
			typ = typeCodes[code]
		default:
			return fail("unknown type code")
		}
		delta, n := binary.Uvarint(p)
		if n <= 0 {
			return fail("bad time")
		}
		p = p[n:]
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p[n:])) {
			return fail("bad JSON length")
		}
		p = p[n:]
		js := p[:l:l]
		if copyJSON {
			js = make([]byte, l)
			copy(js, p[:l])
		}
		p = p[l:]
		entries = append(entries, entry{typ: typ, json: js, enqueuedAt: base + int64(delta)})
	}
	if len(p) != 0 {
		return nil, int(count), fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(p))
	}
	return newBatchRequest(entries), int(count), nil
}
