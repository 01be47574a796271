package envelope

import (
	"bytes"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// Statistic builds one MetricData envelope carrying a single measurement,
// value, with the given string properties: the shape the Azure Monitor SDKs
// give their customer-facing delivery statistics (Item_Success_Count and
// the like), a metric named name with its dimensions as properties.
//
// It goes through the same writer as converted data points, so the envelope
// has the same tags (ai.internal.sdkVersion) and the same formatting. Its
// Type is CustomMetric; the caller must not count it as an exported item.
func Statistic(iKey, name string, value int64, t time.Time, props map[string]string) Item {
	c := newConverter(iKey, 1)
	attrs := pcommon.NewMap()
	attrs.EnsureCapacity(len(props))
	for k, v := range props {
		attrs.PutStr(k, v)
	}
	// finish sorts the properties by key: the output does not depend on the
	// map's order.
	c.metricPoint(&resource{}, name, &point{kind: kindMeasurement, value: float64(value), count: 1}, t, attrs)
	return c.items[0]
}

var successMember = []byte(`"success":`)

// RecordedSuccess reads the "success" field of a request or dependency
// envelope (what the application recorded about the operation, not whether
// the envelope was delivered); known is false when the envelope has none.
//
// It searches the bytes rather than decoding the JSON, which would cost far
// more for every exported item; the member comes before the properties, so
// the search stops early. It cannot be fooled: "success" is the only member
// this package writes with a bare boolean value (tags and properties are
// strings), and inside a JSON string every quote is escaped, so a quote
// directly after the letters of success, a colon, then true or false, only
// occurs as that member.
func RecordedSuccess(js []byte) (success, known bool) {
	for {
		i := bytes.Index(js, successMember)
		if i < 0 {
			return false, false
		}
		rest := js[i+len(successMember):]
		switch {
		case bytes.HasPrefix(rest, []byte("true")):
			return true, true
		case bytes.HasPrefix(rest, []byte("false")):
			return false, true
		}
		// A property named success: its value is a string.
		js = rest
	}
}
