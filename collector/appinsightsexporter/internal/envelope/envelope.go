package envelope

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// TelemetryType is how an item is counted (the statsbeat telemetry types).
type TelemetryType string

// The telemetry types an Item can have.
const (
	Request      TelemetryType = "REQUEST"
	Dependency   TelemetryType = "DEPENDENCY"
	Trace        TelemetryType = "TRACE" // MessageData
	Exception    TelemetryType = "EXCEPTION"
	CustomEvent  TelemetryType = "CUSTOM_EVENT"
	CustomMetric TelemetryType = "CUSTOM_METRIC"
)

// Item is one envelope ready to send: compact JSON (no trailing newline) and its type.
type Item struct {
	Type TelemetryType
	JSON []byte
}

// sdkVersion goes in ai.internal.sdkVersion. It is a constant, not the build
// version, so that output does not change with the binary that produced it.
const sdkVersion = "telemux-otelcol:1.0"

// notAvailable fills a field the service requires when the source has nothing
// for it: an empty required string fails the item with a 400, and "n/a" is
// what the Application Insights SDKs use for the same case.
const notAvailable = "n/a"

// Field length limits of the Breeze contracts, in characters as the service
// counts them (UTF-16 code units). Longer values are cut, as the SDKs do,
// rather than letting the service reject the item.
const (
	maxPropertyKey   = 150
	maxPropertyValue = 8192
	maxID            = 128
	maxName          = 1024
	maxEventName     = 512
	maxResultCode    = 1024
	maxURL           = 2048
	maxData          = 8192
	maxTarget        = 1024
	maxType          = 1024
	maxSource        = 1024
	maxMessage       = 32768
	maxTypeName      = 1024

	maxTagApplicationVer = 1024
	maxTagCloudRole      = 256
	maxTagRoleInstance   = 256
	maxTagOperationName  = 1024
	maxTagUserID         = 128
)

// Envelope names (after "Microsoft.ApplicationInsights.") and base types.
const (
	nameRequest    = "Request"
	nameDependency = "RemoteDependency"
	nameMessage    = "Message"
	nameException  = "Exception"
	nameEvent      = "Event"
	nameMetric     = "Metric"

	baseRequest    = "RequestData"
	baseDependency = "RemoteDependencyData"
	baseMessage    = "MessageData"
	baseException  = "ExceptionData"
	baseEvent      = "EventData"
	baseMetric     = "MetricData"
)

// Severity levels of MessageData and ExceptionData; noSeverity omits the field.
const (
	noSeverity  = -1
	sevVerbose  = 0
	sevInfo     = 1
	sevWarning  = 2
	sevError    = 3
	sevCritical = 4
)

// kv is one property, already cut to the service's limits.
type kv struct{ k, v string }

// resource is what every item of one resource shares, computed once.
type resource struct {
	role, roleInstance, appVer string
	props                      []kv
}

func newResource(r pcommon.Resource) resource {
	attrs := r.Attributes()
	props := make([]kv, 0, attrs.Len())
	for k, v := range attrs.All() {
		props = append(props, property(k, v))
	}
	res := resource{props: sortedUnique(props)}
	if name := strAttr(attrs, "service.name"); name != "" {
		if ns := strAttr(attrs, "service.namespace"); ns != "" {
			name = ns + "." + name
		}
		res.role = truncate(name, maxTagCloudRole)
	}
	res.roleInstance = truncate(strAttr(attrs, "service.instance.id", "host.name"), maxTagRoleInstance)
	res.appVer = truncate(strAttr(attrs, "service.version"), maxTagApplicationVer)
	return res
}

// sortedUnique sorts props by key, keeping the last of equal keys (a later
// duplicate, or a key equal to an earlier one once cut, wins).
func sortedUnique(props []kv) []kv {
	slices.SortStableFunc(props, func(a, b kv) int { return cmp.Compare(a.k, b.k) })
	out := props[:0]
	for i, p := range props {
		if i+1 < len(props) && props[i+1].k == p.k {
			continue
		}
		out = append(out, p)
	}
	return out
}

func property(k string, v pcommon.Value) kv {
	return kv{truncate(k, maxPropertyKey), truncate(v.AsString(), maxPropertyValue)}
}

// tags are the per-item context tags; the resource supplies the rest.
type tags struct {
	traceID  pcommon.TraceID
	parentID pcommon.SpanID
	opName   string
	userID   string
}

// converter holds the scratch space reused across the items of one call.
type converter struct {
	iKey   string
	now    time.Time
	hasNow bool
	buf    []byte
	res    []kv    // the current item's resource properties, sorted
	props  []kv    // the current item's own properties, in attribute order
	order  []int32 // props indices, sorted by key
	items  []Item
}

func newConverter(iKey string, capacity int) *converter {
	return &converter{
		iKey:  iKey,
		buf:   make([]byte, 0, 2048),
		props: make([]kv, 0, 32),
		order: make([]int32, 0, 32),
		items: make([]Item, 0, capacity),
	}
}

// time picks the first non-zero timestamp, else the time of the conversion
// (taken once per call, so all such items of a batch agree).
func (c *converter) time(ts ...pcommon.Timestamp) time.Time {
	for _, t := range ts {
		if t != 0 {
			return t.AsTime()
		}
	}
	if !c.hasNow {
		c.now, c.hasNow = time.Now(), true
	}
	return c.now
}

// open starts an envelope and leaves the writer inside baseData, after "ver".
func (c *converter) open(res *resource, tg *tags, name, baseType string, t time.Time) {
	b := append(c.buf[:0], `{"ver":1,"name":"Microsoft.ApplicationInsights.`...)
	b = append(b, name...)
	b = append(b, `","time":"`...)
	b = appendTime(b, t)
	b = append(b, `","iKey":`...)
	b = appendString(b, c.iKey)

	// Tags in key order, so the output matches a sorted map.
	b = append(b, `,"tags":{`...)
	b = appendTag(b, "ai.application.ver", res.appVer)
	b = appendTag(b, "ai.cloud.role", res.role)
	b = appendTag(b, "ai.cloud.roleInstance", res.roleInstance)
	b = appendTag(b, "ai.internal.sdkVersion", sdkVersion)
	if !tg.traceID.IsEmpty() {
		b = append(b, `,"ai.operation.id":"`...)
		b = appendHex(b, tg.traceID[:])
		b = append(b, '"')
	}
	b = appendTag(b, "ai.operation.name", truncate(tg.opName, maxTagOperationName))
	if !tg.parentID.IsEmpty() {
		b = append(b, `,"ai.operation.parentId":"`...)
		b = appendHex(b, tg.parentID[:])
		b = append(b, '"')
	}
	b = appendTag(b, "ai.user.id", truncate(tg.userID, maxTagUserID))

	b = append(b, `},"data":{"baseType":"`...)
	b = append(b, baseType...)
	b = append(b, `","baseData":{"ver":2`...)
	c.buf = b
}

// appendTag writes one tag if it has a value, with a comma unless it is the
// first member of the tags object.
func appendTag(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, `":`...)
	return appendString(b, value)
}

// str writes `,"key":"value"`, cut to max; key is a literal needing no escaping.
func (c *converter) str(key, value string, max int) {
	c.buf = append(c.buf, ',', '"')
	c.buf = append(c.buf, key...)
	c.buf = append(c.buf, `":`...)
	c.buf = appendString(c.buf, truncate(value, max))
}

// optStr is str for optional fields: nothing when value is empty.
func (c *converter) optStr(key, value string, max int) {
	if value != "" {
		c.str(key, value, max)
	}
}

// required is str for fields the service requires: notAvailable when empty.
func (c *converter) required(key, value string, max int) {
	if value == "" {
		value = notAvailable
	}
	c.str(key, value, max)
}

func (c *converter) boolean(key string, v bool) {
	c.buf = append(c.buf, ',', '"')
	c.buf = append(c.buf, key...)
	c.buf = append(c.buf, `":`...)
	c.buf = strconv.AppendBool(c.buf, v)
}

func (c *converter) severity(level int) {
	if level == noSeverity {
		return
	}
	c.buf = append(c.buf, `,"severityLevel":`...)
	c.buf = strconv.AppendInt(c.buf, int64(level), 10)
}

// startProps starts the item's properties with its resource's; the caller
// then adds the item's attributes with addProps, which win on equal keys.
func (c *converter) startProps(res *resource) {
	c.res = res.props
	c.props = c.props[:0]
}

func (c *converter) addProps(attrs pcommon.Map) {
	for k, v := range attrs.All() {
		c.props = append(c.props, property(k, v))
	}
}

// finish writes the properties, closes the envelope and records the item.
func (c *converter) finish(typ TelemetryType) {
	// Sorting indices rather than the kv pairs themselves keeps pointer
	// writes (and GC write barriers) out of the sort, which dominated it.
	// Ties sort by index, so the last of equal keys is the later attribute.
	c.order = c.order[:0]
	for i := range c.props {
		c.order = append(c.order, int32(i))
	}
	slices.SortFunc(c.order, func(a, b int32) int {
		if r := cmp.Compare(c.props[a].k, c.props[b].k); r != 0 {
			return r
		}
		return cmp.Compare(a, b)
	})

	if len(c.res) > 0 || len(c.props) > 0 {
		c.buf = append(c.buf, `,"properties":{`...)
		// Merge the sorted resource properties with the sorted item ones;
		// an item property replaces a resource one with the same key.
		r, first := 0, true
		for n, i := range c.order {
			p := c.props[i]
			if n+1 < len(c.order) && c.props[c.order[n+1]].k == p.k {
				continue
			}
			for ; r < len(c.res) && c.res[r].k <= p.k; r++ {
				if c.res[r].k != p.k {
					c.prop(c.res[r], &first)
				}
			}
			c.prop(p, &first)
		}
		for ; r < len(c.res); r++ {
			c.prop(c.res[r], &first)
		}
		c.buf = append(c.buf, '}')
	}
	c.buf = append(c.buf, "}}}"...)
	out := make([]byte, len(c.buf))
	copy(out, c.buf)
	c.items = append(c.items, Item{Type: typ, JSON: out})
}

func (c *converter) prop(p kv, first *bool) {
	if !*first {
		c.buf = append(c.buf, ',')
	}
	*first = false
	c.buf = appendString(c.buf, p.k)
	c.buf = append(c.buf, ':')
	c.buf = appendString(c.buf, p.v)
}

// strAttr returns the first of keys present with a non-empty value, as a string.
func strAttr(m pcommon.Map, keys ...string) string {
	for _, k := range keys {
		if v, ok := m.Get(k); ok {
			if s := v.AsString(); s != "" {
				return s
			}
		}
	}
	return ""
}

// intAttr returns the first of keys holding an integer, given as an int, an
// integral double or a decimal string (instrumentations disagree).
func intAttr(m pcommon.Map, keys ...string) (int64, bool) {
	for _, k := range keys {
		v, ok := m.Get(k)
		if !ok {
			continue
		}
		switch v.Type() {
		case pcommon.ValueTypeInt:
			return v.Int(), true
		case pcommon.ValueTypeDouble:
			if f := v.Double(); f == float64(int64(f)) {
				return int64(f), true
			}
		case pcommon.ValueTypeStr:
			if n, err := strconv.ParseInt(v.Str(), 10, 64); err == nil {
				return n, true
			}
		}
	}
	return 0, false
}
