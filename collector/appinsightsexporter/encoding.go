package appinsightsexporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// The persistent queue stores each request in this compact binary form:
//
//	byte     version (1)
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
const encodingVersion = 1

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
	return marshalRequest(r), nil
}

func marshalRequest(r *batchRequest) []byte {
	var base int64
	if len(r.entries) > 0 {
		base = r.entries[0].enqueuedAt
		for _, e := range r.entries[1:] {
			base = min(base, e.enqueuedAt)
		}
	}
	buf := make([]byte, 0, 1+2*binary.MaxVarintLen64+r.bytes+len(r.entries)*(1+2*binary.MaxVarintLen64))
	buf = append(buf, encodingVersion)
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
	if data[0] != encodingVersion {
		return nil, 0, fmt.Errorf("%w: unknown version %d", errCorrupt, data[0])
	}
	p := data[1:]
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
		// Copy: the storage may reuse its buffer.
		js := make([]byte, l)
		copy(js, p[:l])
		p = p[l:]
		entries = append(entries, entry{typ: typ, json: js, enqueuedAt: base + int64(delta)})
	}
	if len(p) != 0 {
		return nil, int(count), fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(p))
	}
	return newBatchRequest(entries), int(count), nil
}
