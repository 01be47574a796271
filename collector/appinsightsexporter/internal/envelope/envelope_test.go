package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestEmptyInputs(t *testing.T) {
	require.Empty(t, FromTraces(ptrace.NewTraces(), testIKey))
	require.Empty(t, FromLogs(plog.NewLogs(), testIKey))
	require.Empty(t, FromMetrics(pmetric.NewMetrics(), testIKey))

	// Resources and scopes with nothing in them yield nothing either.
	td := ptrace.NewTraces()
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	require.Empty(t, FromTraces(td, testIKey))
	ld := plog.NewLogs()
	ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty()
	require.Empty(t, FromLogs(ld, testIKey))
	md := pmetric.NewMetrics()
	md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty().SetEmptyGauge()
	require.Empty(t, FromMetrics(md, testIKey))
}

func TestPropertyLimits(t *testing.T) {
	longKey := strings.Repeat("k", 200)
	td, s := newSpan(ptrace.SpanKindServer, "op")
	a := s.Attributes()
	a.PutStr(longKey, "v")
	a.PutStr("long.value", strings.Repeat("v", 10000))
	// 8191 ASCII characters then a character outside the BMP, which the
	// service counts as two: it does not fit.
	a.PutStr("surrogate", strings.Repeat("a", 8191)+"😀")
	// Multi-byte characters under the limit are kept whole.
	a.PutStr("wide", strings.Repeat("é", 8192))

	_, m := one(t, FromTraces(td, testIKey))
	p := propsOf(m)
	require.NotContains(t, p, longKey)
	require.Equal(t, "v", p[strings.Repeat("k", 150)])
	require.Equal(t, strings.Repeat("v", 8192), p["long.value"])
	require.Equal(t, strings.Repeat("a", 8191), p["surrogate"])
	require.Equal(t, strings.Repeat("é", 8192), p["wide"])
	require.Equal(t, "t01", p["tenant.id"])
}

func TestKeysEqualAfterCutting(t *testing.T) {
	// Two keys that differ only past character 150 collide; the later one
	// wins, deterministically, and a span key still beats a resource key.
	prefix := strings.Repeat("p", 150)
	td, s := newSpan(ptrace.SpanKindServer, "op")
	td.ResourceSpans().At(0).Resource().Attributes().PutStr(prefix+"-resource", "r")
	s.Attributes().PutStr(prefix+"-first", "1")
	s.Attributes().PutStr(prefix+"-second", "2")
	// The same within the resource alone.
	other := strings.Repeat("q", 150)
	td.ResourceSpans().At(0).Resource().Attributes().PutStr(other+"-a", "a")
	td.ResourceSpans().At(0).Resource().Attributes().PutStr(other+"-b", "b")
	for range 5 {
		it, m := one(t, FromTraces(td, testIKey))
		require.Equal(t, "2", propsOf(m)[prefix])
		require.Equal(t, "b", propsOf(m)[other])
		require.Equal(t, 1, strings.Count(string(it.JSON), prefix))
		require.Equal(t, 1, strings.Count(string(it.JSON), other))
	}
}

func TestLongFieldsAreCut(t *testing.T) {
	long := strings.Repeat("x", 40000)
	td, s := newSpan(ptrace.SpanKindServer, long)
	s.Attributes().PutStr("url.full", long)
	s.Attributes().PutStr("enduser.id", long)
	td.ResourceSpans().At(0).Resource().Attributes().PutStr("service.name", long)
	ev := s.Events().AppendEmpty()
	ev.SetName("exception")
	ev.Attributes().PutStr("exception.type", long)
	ev.Attributes().PutStr("exception.message", long)
	ev.Attributes().PutStr("exception.stacktrace", long+long)

	items := FromTraces(td, testIKey)
	require.Len(t, items, 2)
	m := decode(t, items[0])
	bd := baseData(m)
	require.Len(t, bd["name"], 1024)
	require.Len(t, bd["url"], 2048)
	require.Len(t, tagsOf(m)["ai.operation.name"], 1024)
	require.Len(t, tagsOf(m)["ai.user.id"], 128)
	require.Len(t, tagsOf(m)["ai.cloud.role"], 256)
	exc := baseData(decode(t, items[1]))["exceptions"].([]any)[0].(map[string]any)
	require.Len(t, exc["typeName"], 1024)
	require.Len(t, exc["message"], 32768)
	require.Len(t, exc["stack"], 32768)
}

func TestDeterministic(t *testing.T) {
	build := func() (ptrace.Traces, plog.Logs, pmetric.Metrics) {
		td, s := newSpan(ptrace.SpanKindServer, "op")
		for i := range 50 {
			s.Attributes().PutStr(fmt.Sprintf("attr.%02d", 49-i), fmt.Sprint(i))
			td.ResourceSpans().At(0).Resource().Attributes().PutInt(fmt.Sprintf("res.%02d", i), int64(i))
		}
		s.Attributes().PutEmptyMap("nested").FromRaw(map[string]any{"z": 1, "a": []any{"x", 2.5}, "m": true})
		s.Events().AppendEmpty().SetName("e")
		ld, lr := newLog()
		lr.Body().SetEmptyMap().FromRaw(map[string]any{"b": 1, "a": 2})
		lr.Attributes().PutStr("k", "v")
		md, g := newMetric("m")
		dp := g.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetDoubleValue(0.1)
		dp.SetTimestamp(ts(testStart))
		return td, ld, md
	}
	td1, ld1, md1 := build()
	td2, ld2, md2 := build()
	for name, pair := range map[string][2][]Item{
		"traces":        {FromTraces(td1, testIKey), FromTraces(td2, testIKey)},
		"traces again":  {FromTraces(td1, testIKey), FromTraces(td1, testIKey)},
		"logs":          {FromLogs(ld1, testIKey), FromLogs(ld2, testIKey)},
		"metrics":       {FromMetrics(md1, testIKey), FromMetrics(md2, testIKey)},
		"metrics again": {FromMetrics(md1, testIKey), FromMetrics(md1, testIKey)},
	} {
		t.Run(name, func(t *testing.T) {
			require.NotEmpty(t, pair[0])
			require.Equal(t, len(pair[0]), len(pair[1]))
			for i := range pair[0] {
				require.Equal(t, pair[0][i].Type, pair[1][i].Type)
				require.Equal(t, string(pair[0][i].JSON), string(pair[1][i].JSON))
			}
		})
	}
	// Property keys come out sorted, whatever the insertion order.
	js := string(FromTraces(td1, testIKey)[0].JSON)
	require.Less(t, strings.Index(js, `"attr.00"`), strings.Index(js, `"attr.49"`))
	require.Less(t, strings.Index(js, `"attr.49"`), strings.Index(js, `"res.00"`))
}

func TestItemsDoNotShareMemory(t *testing.T) {
	// The parent may append to an item (a newline, say); that must not
	// write into its neighbour.
	td, s := newSpan(ptrace.SpanKindServer, "op")
	s.Events().AppendEmpty().SetName("e")
	items := FromTraces(td, testIKey)
	require.Len(t, items, 2)
	second := string(items[1].JSON)
	_ = append(items[0].JSON, '\n', '\n', '\n')
	require.Equal(t, second, string(items[1].JSON))
}

func TestIKeyIsEscaped(t *testing.T) {
	ld, lr := newLog()
	lr.Body().SetStr("m")
	_, m := one(t, FromLogs(ld, `we"ird\key`))
	require.Equal(t, `we"ird\key`, m["iKey"])
}

// TestOddInputs throws malformed and random pdata at all three converters:
// nothing may panic, and every item must be valid JSON with a name and a
// parseable time.
func TestOddInputs(t *testing.T) {
	odd := []string{"", " ", "\x00", "\xff\xfe", "a\u2028b", `"quoted"`, `back\slash`, "tab\tnl\n", "😀", strings.Repeat("é", 9000)}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return odd[rng.IntN(len(odd))] }
	randValue := func(v pcommon.Value) {
		switch rng.IntN(7) {
		case 0:
			v.SetStr(pick())
		case 1:
			v.SetInt(rng.Int64() - math.MaxInt64/2)
		case 2:
			v.SetDouble([]float64{math.NaN(), math.Inf(1), -0.0, 1e300}[rng.IntN(4)])
		case 3:
			v.SetBool(true)
		case 4:
			m := v.SetEmptyMap()
			m.PutStr(pick(), pick())
			m.PutDouble("nan", math.NaN())
		case 5:
			v.SetEmptySlice().AppendEmpty().SetStr(pick())
		case 6:
			v.SetEmptyBytes().FromRaw([]byte(pick()))
		}
	}
	randAttrs := func(m pcommon.Map) {
		keys := []string{
			"http.request.method", "http.method", "http.route", "url.full", "http.url", "url.scheme", "url.path",
			"url.query", "http.target", "server.address", "server.port", "net.peer.port", "http.response.status_code",
			"http.status_code", "rpc.system", "rpc.grpc.status_code", "rpc.response.status_code", "db.system",
			"db.statement", "db.name", "messaging.system", "messaging.destination.name", "exception.type",
			"exception.message", "exception.stacktrace", "microsoft.custom_event.name", "service.name",
			"service.namespace", "service.instance.id", "host.name", "enduser.id",
		}
		for range rng.IntN(12) {
			k := keys[rng.IntN(len(keys))]
			if rng.IntN(4) == 0 {
				k = pick()
			}
			randValue(m.PutEmpty(k))
		}
	}
	randTS := func() pcommon.Timestamp {
		return []pcommon.Timestamp{0, 1, math.MaxUint64, math.MaxInt64, ts(testStart)}[rng.IntN(5)]
	}
	randIDs := func() (pcommon.TraceID, pcommon.SpanID) {
		if rng.IntN(2) == 0 {
			return pcommon.TraceID{}, pcommon.SpanID{}
		}
		return traceID, spanID
	}

	check := func(t *testing.T, items []Item) {
		t.Helper()
		for _, it := range items {
			m := decode(t, it)
			require.NotEmpty(t, m["time"])
			require.NotEmpty(t, m["name"])
		}
	}

	for i := range 300 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			randAttrs(rs.Resource().Attributes())
			for range rng.IntN(4) {
				s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
				s.SetName(pick())
				s.SetKind(ptrace.SpanKind(rng.IntN(7))) // includes kinds that do not exist
				tid, sid := randIDs()
				s.SetTraceID(tid)
				s.SetSpanID(sid)
				s.SetStartTimestamp(randTS())
				s.SetEndTimestamp(randTS())
				s.Status().SetCode(ptrace.StatusCode(rng.IntN(4)))
				randAttrs(s.Attributes())
				for range rng.IntN(3) {
					ev := s.Events().AppendEmpty()
					ev.SetName([]string{"exception", pick()}[rng.IntN(2)])
					ev.SetTimestamp(randTS())
					randAttrs(ev.Attributes())
				}
			}
			check(t, FromTraces(td, pick()))

			ld := plog.NewLogs()
			rl := ld.ResourceLogs().AppendEmpty()
			randAttrs(rl.Resource().Attributes())
			for range rng.IntN(4) {
				lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
				randValue(lr.Body())
				lr.SetSeverityNumber(plog.SeverityNumber(rng.IntN(30)))
				lr.SetTimestamp(randTS())
				lr.SetObservedTimestamp(randTS())
				tid, sid := randIDs()
				lr.SetTraceID(tid)
				lr.SetSpanID(sid)
				randAttrs(lr.Attributes())
			}
			check(t, FromLogs(ld, pick()))

			md := pmetric.NewMetrics()
			rm := md.ResourceMetrics().AppendEmpty()
			randAttrs(rm.Resource().Attributes())
			ms := rm.ScopeMetrics().AppendEmpty().Metrics()
			floats := []float64{0, -1, 1e-300, math.NaN(), math.Inf(-1), math.MaxFloat64}
			for range rng.IntN(5) {
				m := ms.AppendEmpty()
				m.SetName(pick())
				switch rng.IntN(6) {
				case 0:
					dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
					dp.SetDoubleValue(floats[rng.IntN(len(floats))])
					dp.SetTimestamp(randTS())
					randAttrs(dp.Attributes())
				case 1:
					dp := m.SetEmptySum().DataPoints().AppendEmpty()
					dp.SetIntValue(rng.Int64())
					dp.SetTimestamp(randTS())
				case 2:
					dp := m.SetEmptyHistogram().DataPoints().AppendEmpty()
					dp.SetCount(rng.Uint64())
					dp.SetSum(floats[rng.IntN(len(floats))])
					dp.SetMin(floats[rng.IntN(len(floats))])
					dp.SetTimestamp(randTS())
				case 3:
					dp := m.SetEmptyExponentialHistogram().DataPoints().AppendEmpty()
					dp.SetCount(uint64(rng.IntN(3)))
					dp.SetMax(floats[rng.IntN(len(floats))])
				case 4:
					dp := m.SetEmptySummary().DataPoints().AppendEmpty()
					dp.SetSum(floats[rng.IntN(len(floats))])
					q := dp.QuantileValues().AppendEmpty()
					q.SetQuantile(float64(rng.IntN(2)))
					q.SetValue(floats[rng.IntN(len(floats))])
				case 5:
					// A metric with no data set at all.
				}
			}
			check(t, FromMetrics(md, pick()))
		})
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"<&>", `"<&>"`},
		{"é😀", `"é😀"`},
		{"\xff", `"\ufffd"`},
		{"a\xe2\x82", `"a\ufffd\ufffd"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"\x7f", "\"\x7f\""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, string(appendString(nil, tt.in)), "%q", tt.in)
	}
}

// FuzzAppendString checks the hand-written escaping against encoding/json:
// the output must be valid and decode to what encoding/json decodes its own
// encoding of the same string to.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\", "\x00\x01\x1f", "\xff\xfe", "\u2028", "😀", "\xed\xa0\x80", "é\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		require.True(t, json.Valid(got), "%q -> %s", s, got)
		var fromOurs, fromStd string
		require.NoError(t, json.Unmarshal(got, &fromOurs))
		std, err := json.Marshal(s)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(std, &fromStd))
		require.Equal(t, fromStd, fromOurs)
	})
}

func TestTruncate(t *testing.T) {
	utf16Len := func(s string) int { return len(utf16.Encode([]rune(s))) }
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"ééé", 3, "ééé"},
		{"éééé", 3, "ééé"},
		{"a😀", 2, "a"},
		{"a😀", 3, "a😀"},
		{"\xff\xff\xff\xff", 2, "\xff\xff"},
	}
	for _, tt := range tests {
		got := truncate(tt.in, tt.max)
		require.Equal(t, tt.want, got, "truncate(%q, %d)", tt.in, tt.max)
		require.LessOrEqual(t, utf16Len(got), tt.max)
		if utf8.ValidString(tt.in) {
			require.True(t, utf8.ValidString(got))
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1.5, 0.1, 1e-7, 123456789.125, 1e20, 1e21, 1e300, math.SmallestNonzeroFloat64, math.MaxFloat64} {
		got := appendFloat(nil, f)
		require.True(t, json.Valid(got), "%v -> %s", f, got)
		var back float64
		require.NoError(t, json.Unmarshal(got, &back))
		require.Equal(t, f, back)
	}
}

func TestAppendDuration(t *testing.T) {
	for ns, want := range map[uint64]string{
		0:                                       "00:00:00.0000000",
		100:                                     "00:00:00.0000001",
		uint64(time.Second):                     "00:00:01.0000000",
		uint64(59*time.Minute + 59*time.Second): "00:59:59.0000000",
		uint64(24 * time.Hour):                  "1.00:00:00.0000000",
		uint64(1000*24*time.Hour + time.Millisecond): "1000.00:00:00.0010000",
		math.MaxUint64: "213503.23:34:33.7095516",
	} {
		require.Equal(t, want, string(appendDuration(nil, ns)), "%d", ns)
	}
}

func TestAppendTime(t *testing.T) {
	loc := time.FixedZone("x", 3600)
	require.Equal(t, "2024-05-01T09:00:00.0000000Z", string(appendTime(nil, time.Date(2024, 5, 1, 10, 0, 0, 0, loc))))
	require.Equal(t, "2024-05-01T10:00:00.1234567Z", string(appendTime(nil, testStart)))
	require.True(t, bytes.HasSuffix(appendTime(nil, pcommon.Timestamp(math.MaxUint64).AsTime()), []byte("Z")))
}
