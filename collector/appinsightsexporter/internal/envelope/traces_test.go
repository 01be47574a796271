package envelope

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestServerSpanExactJSON(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindServer, "GET /users/{id}")
	a := s.Attributes()
	a.PutStr("http.request.method", "GET")
	a.PutStr("http.route", "/users/{id}")
	a.PutInt("http.response.status_code", 200)
	a.PutStr("url.scheme", "https")
	a.PutStr("server.address", "shop.example")
	a.PutInt("server.port", 443)
	a.PutStr("url.path", "/users/42")
	a.PutStr("client.address", "10.0.0.9")

	it, _ := one(t, FromTraces(td, testIKey))
	require.Equal(t, Request, it.Type)
	require.Equal(t, `{"ver":1,"name":"Microsoft.ApplicationInsights.Request","time":"2024-05-01T10:00:00.1234567Z",`+
		`"iKey":"00000000-0000-0000-0000-000000000001",`+
		`"tags":{"ai.application.ver":"1.2.3","ai.cloud.role":"shop.checkout","ai.cloud.roleInstance":"pod-1",`+
		`"ai.internal.sdkVersion":"telemux-otelcol:1.0","ai.operation.id":"0102030405060708090a0b0c0d0e0f10",`+
		`"ai.operation.name":"GET /users/{id}","ai.operation.parentId":"b1b2b3b4b5b6b7b8"},`+
		`"data":{"baseType":"RequestData","baseData":{"ver":2,"id":"a1a2a3a4a5a6a7a8","name":"GET /users/{id}",`+
		`"duration":"00:00:01.5000000","responseCode":"200","success":true,"source":"10.0.0.9",`+
		`"url":"https://shop.example/users/42",`+
		`"properties":{"client.address":"10.0.0.9","http.request.method":"GET","http.response.status_code":"200",`+
		`"http.route":"/users/{id}","server.address":"shop.example","server.port":"443",`+
		`"service.instance.id":"pod-1","service.name":"checkout","service.namespace":"shop",`+
		`"service.version":"1.2.3","tenant.id":"t01","url.path":"/users/42","url.scheme":"https"}}}}`,
		string(it.JSON))
}

func TestRequestRequiredFields(t *testing.T) {
	// A bare server span still carries everything RequestData requires.
	for _, kind := range []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindConsumer} {
		t.Run(kind.String(), func(t *testing.T) {
			td, _ := newSpan(kind, "work")
			it, m := one(t, FromTraces(td, testIKey))
			require.Equal(t, Request, it.Type)
			require.Equal(t, startStr, m["time"])
			require.Equal(t, testIKey, m["iKey"])
			bd := baseData(m)
			require.Equal(t, spanHex, bd["id"])
			require.Equal(t, "work", bd["name"])
			require.Equal(t, "00:00:01.5000000", bd["duration"])
			require.Equal(t, "0", bd["responseCode"])
			require.Equal(t, true, bd["success"])
			require.NotContains(t, bd, "url")
			require.NotContains(t, bd, "source")
			tg := tagsOf(m)
			require.Equal(t, traceHex, tg["ai.operation.id"])
			require.Equal(t, parentHex, tg["ai.operation.parentId"])
			require.Equal(t, "work", tg["ai.operation.name"])
		})
	}
}

func TestResponseCodeAndSuccess(t *testing.T) {
	tests := []struct {
		name        string
		kind        ptrace.SpanKind
		status      ptrace.StatusCode
		attrs       map[string]any
		wantCode    string
		wantSuccess bool
	}{
		{"no attributes", ptrace.SpanKindServer, ptrace.StatusCodeUnset, nil, "0", true},
		{"no attributes ok", ptrace.SpanKindServer, ptrace.StatusCodeOk, nil, "0", true},
		{"no attributes error", ptrace.SpanKindServer, ptrace.StatusCodeError, nil, "1", false},
		{"http 200", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": 200}, "200", true},
		{"http 302", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": 302}, "302", true},
		{"http 404 server", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": 404}, "404", false},
		{"http 404 client", ptrace.SpanKindClient, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": 404}, "404", false},
		{"http 503", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": 503}, "503", false},
		{"http 404 marked ok", ptrace.SpanKindServer, ptrace.StatusCodeOk, map[string]any{"http.response.status_code": 404}, "404", true},
		{"http 200 marked error", ptrace.SpanKindClient, ptrace.StatusCodeError, map[string]any{"http.response.status_code": 200}, "200", false},
		{"old http.status_code", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.status_code": 201}, "201", true},
		{"status code as string", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": "502"}, "502", false},
		{"status code not a number", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.response.status_code": "oops"}, "0", true},
		{"new wins over old", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"http.status_code": 500, "http.response.status_code": 200}, "200", true},
		{"grpc code", ptrace.SpanKindClient, ptrace.StatusCodeError, map[string]any{"rpc.system": "grpc", "rpc.grpc.status_code": 14}, "14", false},
		{"grpc ok", ptrace.SpanKindServer, ptrace.StatusCodeUnset, map[string]any{"rpc.system": "grpc", "rpc.grpc.status_code": 0}, "0", true},
		{"rpc response code", ptrace.SpanKindServer, ptrace.StatusCodeError, map[string]any{"rpc.system.name": "grpc", "rpc.response.status_code": "UNAVAILABLE"}, "UNAVAILABLE", false},
		{"db response code", ptrace.SpanKindClient, ptrace.StatusCodeError, map[string]any{"db.system.name": "postgresql", "db.response.status_code": "42P01"}, "42P01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, s := newSpan(tt.kind, "op")
			require.NoError(t, s.Attributes().FromRaw(tt.attrs))
			s.Status().SetCode(tt.status)
			_, m := one(t, FromTraces(td, testIKey))
			bd := baseData(m)
			codeKey := "resultCode"
			if tt.kind == ptrace.SpanKindServer {
				codeKey = "responseCode"
			}
			require.Equal(t, tt.wantCode, bd[codeKey])
			require.Equal(t, tt.wantSuccess, bd["success"])
		})
	}
}

func TestRequestNameSourceURL(t *testing.T) {
	tests := []struct {
		name       string
		spanName   string
		attrs      map[string]any
		wantName   string
		wantURL    string
		wantSource string
	}{
		{
			name:     "route",
			spanName: "GET",
			attrs:    map[string]any{"http.request.method": "GET", "http.route": "/items/{id}"},
			wantName: "GET /items/{id}",
		},
		{
			name:     "route without slash",
			spanName: "POST",
			attrs:    map[string]any{"http.method": "POST", "http.route": "items"},
			wantName: "POST /items",
		},
		{
			name:     "unknown method uses the original",
			spanName: "HTTP",
			attrs:    map[string]any{"http.request.method": "_OTHER", "http.request.method_original": "PURGE", "http.route": "/c"},
			wantName: "PURGE /c",
		},
		{
			name:     "no route keeps span name",
			spanName: "GET",
			attrs:    map[string]any{"http.request.method": "GET", "url.full": "https://a.example/x?y=1"},
			wantName: "GET",
			wantURL:  "https://a.example/x?y=1",
		},
		{
			name:     "built url with port and query",
			spanName: "GET",
			attrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "server.address": "a.example",
				"server.port": 8080, "url.path": "x", "url.query": "q=1",
			},
			wantName: "GET",
			wantURL:  "http://a.example:8080/x?q=1",
		},
		{
			name:     "built url drops default port",
			spanName: "GET",
			attrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "https", "server.address": "a.example",
				"server.port": 443, "url.path": "/x",
			},
			wantName: "GET",
			wantURL:  "https://a.example/x",
		},
		{
			name:     "old conventions",
			spanName: "GET",
			attrs: map[string]any{
				"http.method": "GET", "http.scheme": "http", "http.host": "a.example:81",
				"http.target": "/x?y", "net.host.port": 99, "http.client_ip": "1.2.3.4",
			},
			wantName:   "GET",
			wantURL:    "http://a.example:81/x?y",
			wantSource: "1.2.3.4",
		},
		{
			name:       "source from peer address",
			spanName:   "GET",
			attrs:      map[string]any{"http.request.method": "GET", "network.peer.address": "10.1.1.1"},
			wantName:   "GET",
			wantSource: "10.1.1.1",
		},
		{
			name:     "rpc keeps span name",
			spanName: "shop.Cart/Add",
			attrs:    map[string]any{"rpc.system": "grpc", "client.address": "10.2.2.2"},
			wantName: "shop.Cart/Add", wantSource: "10.2.2.2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, s := newSpan(ptrace.SpanKindServer, tt.spanName)
			require.NoError(t, s.Attributes().FromRaw(tt.attrs))
			_, m := one(t, FromTraces(td, testIKey))
			bd := baseData(m)
			require.Equal(t, tt.wantName, bd["name"])
			require.Equal(t, tt.wantName, tagsOf(m)["ai.operation.name"])
			if tt.wantURL == "" {
				require.NotContains(t, bd, "url")
			} else {
				require.Equal(t, tt.wantURL, bd["url"])
			}
			if tt.wantSource == "" {
				require.NotContains(t, bd, "source")
			} else {
				require.Equal(t, tt.wantSource, bd["source"])
			}
		})
	}
}

func TestConsumerSpanSource(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindConsumer, "orders process")
	require.NoError(t, s.Attributes().FromRaw(map[string]any{
		"messaging.system": "kafka", "messaging.destination.name": "orders",
		"server.address": "broker", "server.port": 9092,
	}))
	it, m := one(t, FromTraces(td, testIKey))
	require.Equal(t, Request, it.Type)
	require.Equal(t, "broker:9092/orders", baseData(m)["source"])
	require.Equal(t, "orders process", baseData(m)["name"])
}

func TestClientHTTPSpanToDependency(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindClient, "GET")
	require.NoError(t, s.Attributes().FromRaw(map[string]any{
		"http.request.method":       "GET",
		"url.full":                  "https://api.example:443/v1/items?page=2",
		"server.address":            "api.example",
		"http.response.status_code": 200,
	}))
	it, m := one(t, FromTraces(td, testIKey))
	require.Equal(t, Dependency, it.Type)
	bd := baseData(m)
	require.Equal(t, "HTTP", bd["type"])
	require.Equal(t, "GET /v1/items", bd["name"])
	require.Equal(t, "https://api.example:443/v1/items?page=2", bd["data"])
	require.Equal(t, "api.example", bd["target"])
	require.Equal(t, "200", bd["resultCode"])
	require.Equal(t, true, bd["success"])
	require.Equal(t, spanHex, bd["id"])
	require.Equal(t, "00:00:01.5000000", bd["duration"])
	tg := tagsOf(m)
	require.Equal(t, traceHex, tg["ai.operation.id"])
	require.Equal(t, parentHex, tg["ai.operation.parentId"])
	require.NotContains(t, tg, "ai.operation.name")
}

func TestDependencyMapping(t *testing.T) {
	tests := []struct {
		name                 string
		kind                 ptrace.SpanKind
		spanName             string
		attrs                map[string]any
		wantName, wantType   string
		wantData, wantTarget string
		wantResult           string
	}{
		{
			name: "http built from peer", kind: ptrace.SpanKindClient, spanName: "GET",
			attrs: map[string]any{
				"http.method": "GET", "http.scheme": "http", "net.peer.name": "svc",
				"net.peer.port": 8080, "http.target": "/a/b?c=d", "http.status_code": 500,
			},
			wantName: "GET /a/b", wantType: "HTTP", wantData: "http://svc:8080/a/b?c=d", wantTarget: "svc:8080", wantResult: "500",
		},
		{
			name: "http without url", kind: ptrace.SpanKindClient, spanName: "GET",
			attrs:    map[string]any{"http.request.method": "GET", "server.address": "svc", "server.port": 80},
			wantName: "GET", wantType: "HTTP", wantTarget: "svc:80", wantResult: "0",
		},
		{
			name: "postgres", kind: ptrace.SpanKindClient, spanName: "SELECT orders",
			attrs: map[string]any{
				"db.system.name": "postgresql", "db.query.text": "SELECT * FROM orders",
				"db.namespace": "shop", "server.address": "pg", "server.port": 5432,
			},
			wantName: "SELECT orders", wantType: "postgresql", wantData: "SELECT * FROM orders", wantTarget: "pg:5432|shop", wantResult: "0",
		},
		{
			name: "sql server old conventions", kind: ptrace.SpanKindClient, spanName: "query",
			attrs:    map[string]any{"db.system": "mssql", "db.statement": "SELECT 1", "db.name": "main", "net.peer.name": "sql"},
			wantName: "query", wantType: "SQL", wantData: "SELECT 1", wantTarget: "sql|main", wantResult: "0",
		},
		{
			name: "redis operation only", kind: ptrace.SpanKindClient, spanName: "GET",
			attrs:    map[string]any{"db.system.name": "redis", "db.operation.name": "GET"},
			wantName: "GET", wantType: "redis", wantData: "GET", wantResult: "0",
		},
		{
			name: "grpc", kind: ptrace.SpanKindClient, spanName: "shop.Cart/Add",
			attrs:    map[string]any{"rpc.system": "grpc", "server.address": "cart", "server.port": 50051, "rpc.grpc.status_code": 0},
			wantName: "shop.Cart/Add", wantType: "gRPC", wantData: "shop.Cart/Add", wantTarget: "cart:50051", wantResult: "0",
		},
		{
			name: "kafka producer", kind: ptrace.SpanKindProducer, spanName: "orders publish",
			attrs:    map[string]any{"messaging.system": "kafka", "messaging.destination.name": "orders", "server.address": "broker"},
			wantName: "orders publish", wantType: "kafka", wantTarget: "broker/orders", wantResult: "0",
		},
		{
			name: "internal", kind: ptrace.SpanKindInternal, spanName: "compute",
			wantName: "compute", wantType: "InProc", wantResult: "0",
		},
		{
			name: "internal with http attributes is still InProc", kind: ptrace.SpanKindInternal, spanName: "wrap",
			attrs:    map[string]any{"http.request.method": "GET", "url.full": "http://x/y"},
			wantName: "GET /y", wantType: "InProc", wantData: "http://x/y", wantTarget: "x", wantResult: "0",
		},
		{
			name: "unspecified", kind: ptrace.SpanKindUnspecified, spanName: "thing",
			wantName: "thing", wantType: "InProc", wantResult: "0",
		},
		{
			name: "plain client", kind: ptrace.SpanKindClient, spanName: "call",
			attrs:    map[string]any{"server.address": "::1", "server.port": 7000},
			wantName: "call", wantTarget: "[::1]:7000", wantResult: "0",
		},
		{
			name: "empty name is filled", kind: ptrace.SpanKindClient, spanName: "",
			wantName: "n/a", wantResult: "0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, s := newSpan(tt.kind, tt.spanName)
			require.NoError(t, s.Attributes().FromRaw(tt.attrs))
			it, m := one(t, FromTraces(td, testIKey))
			require.Equal(t, Dependency, it.Type)
			bd := baseData(m)
			check := func(key, want string) {
				t.Helper()
				if want == "" {
					require.NotContains(t, bd, key)
				} else {
					require.Equal(t, want, bd[key], key)
				}
			}
			check("name", tt.wantName)
			check("type", tt.wantType)
			check("data", tt.wantData)
			check("target", tt.wantTarget)
			check("resultCode", tt.wantResult)
		})
	}
}

func TestErrorStatusFails(t *testing.T) {
	for _, kind := range []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindClient, ptrace.SpanKindInternal} {
		t.Run(kind.String(), func(t *testing.T) {
			td, s := newSpan(kind, "op")
			s.Status().SetCode(ptrace.StatusCodeError)
			s.Status().SetMessage("boom")
			_, m := one(t, FromTraces(td, testIKey))
			require.Equal(t, false, baseData(m)["success"])
		})
	}
}

func TestSpanEvents(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindServer, "handle")
	s.Attributes().PutStr("span.marker", "s1")

	msg := s.Events().AppendEmpty()
	msg.SetName("cache miss")
	msg.SetTimestamp(ts(testStart.Add(10 * time.Millisecond)))
	msg.Attributes().PutStr("event.marker", "e1")
	msg.Attributes().PutStr("tenant.id", "event-wins")

	exc := s.Events().AppendEmpty()
	exc.SetName("exception")
	exc.SetTimestamp(ts(testStart.Add(20 * time.Millisecond)))
	exc.Attributes().PutStr("exception.type", "java.lang.IllegalStateException")
	exc.Attributes().PutStr("exception.message", "bad state")
	exc.Attributes().PutStr("exception.stacktrace", "at a.b(C.java:1)")

	noTime := s.Events().AppendEmpty()
	noTime.SetName("")

	items := FromTraces(td, testIKey)
	require.Len(t, items, 4)
	require.Equal(t, []TelemetryType{Request, Trace, Exception, Trace},
		[]TelemetryType{items[0].Type, items[1].Type, items[2].Type, items[3].Type})

	for _, it := range items[1:] {
		m := decode(t, it)
		tg := tagsOf(m)
		require.Equal(t, traceHex, tg["ai.operation.id"])
		require.Equal(t, spanHex, tg["ai.operation.parentId"], "events hang off their span")
		require.Equal(t, "handle", tg["ai.operation.name"])
		require.Equal(t, "shop.checkout", tg["ai.cloud.role"])
		require.Equal(t, testIKey, m["iKey"])
		require.NotContains(t, propsOf(m), "span.marker", "span attributes stay on the span")
	}

	m := decode(t, items[1])
	require.Equal(t, "2024-05-01T10:00:00.1334567Z", m["time"])
	bd := baseData(m)
	require.Equal(t, "cache miss", bd["message"])
	require.NotContains(t, bd, "severityLevel")
	p := propsOf(m)
	require.Equal(t, "e1", p["event.marker"])
	require.Equal(t, "event-wins", p["tenant.id"])
	require.Equal(t, "checkout", p["service.name"])

	m = decode(t, items[2])
	require.Equal(t, "2024-05-01T10:00:00.1434567Z", m["time"])
	bd = baseData(m)
	require.EqualValues(t, 3, bd["severityLevel"])
	require.Equal(t, []any{map[string]any{
		"typeName":     "java.lang.IllegalStateException",
		"message":      "bad state",
		"hasFullStack": true,
		"stack":        "at a.b(C.java:1)",
	}}, bd["exceptions"])
	require.Equal(t, "t01", propsOf(m)["tenant.id"])
	require.Equal(t, "bad state", propsOf(m)["exception.message"])

	m = decode(t, items[3])
	require.Equal(t, startStr, m["time"], "an event without a time takes the span's start")
	require.Equal(t, "n/a", baseData(m)["message"])
}

func TestExceptionEventWithoutDetails(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindClient, "call")
	s.Events().AppendEmpty().SetName("exception")
	items := FromTraces(td, testIKey)
	require.Len(t, items, 2)
	require.Equal(t, Exception, items[1].Type)
	m := decode(t, items[1])
	require.Equal(t, []any{map[string]any{"typeName": "n/a", "message": "n/a", "hasFullStack": false}},
		baseData(m)["exceptions"])
	require.NotContains(t, tagsOf(m), "ai.operation.name", "dependencies name no operation")
}

func TestPropertiesResourceAndSpan(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindClient, "call")
	rattrs := td.ResourceSpans().At(0).Resource().Attributes()
	rattrs.PutStr("resource.marker", "r1")
	rattrs.PutStr("shared", "from-resource")
	rattrs.PutInt("res.int", 7)
	a := s.Attributes()
	a.PutStr("shared", "from-span")
	a.PutBool("flag", true)
	a.PutDouble("ratio", 0.25)
	a.PutEmptySlice("list").FromRaw([]any{"a", 1})
	a.PutEmptyMap("obj").PutStr("k", "v")
	a.PutEmptyBytes("raw").FromRaw([]byte{1, 2, 3})
	a.PutEmpty("nothing")

	it, m := one(t, FromTraces(td, testIKey))
	require.Contains(t, string(it.JSON), `"tenant.id":"t01"`)
	require.Equal(t, map[string]any{
		"service.name":        "checkout",
		"service.namespace":   "shop",
		"service.instance.id": "pod-1",
		"service.version":     "1.2.3",
		"tenant.id":           "t01",
		"resource.marker":     "r1",
		"res.int":             "7",
		"shared":              "from-span",
		"flag":                "true",
		"ratio":               "0.25",
		"list":                `["a",1]`,
		"obj":                 `{"k":"v"}`,
		"raw":                 "AQID",
		"nothing":             "",
	}, propsOf(m))
}

func TestUserIDTag(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindServer, "op")
	s.Attributes().PutStr("enduser.id", "alice")
	_, m := one(t, FromTraces(td, testIKey))
	require.Equal(t, "alice", tagsOf(m)["ai.user.id"])
}

func TestCloudRoleTags(t *testing.T) {
	tests := []struct {
		name               string
		attrs              map[string]any
		wantRole, wantInst string
		wantVersion        string
	}{
		{"namespace and name", map[string]any{"service.namespace": "ns", "service.name": "api", "service.instance.id": "i-1"}, "ns.api", "i-1", ""},
		{"name only", map[string]any{"service.name": "api", "service.version": "2"}, "api", "", "2"},
		{"host fallback", map[string]any{"service.name": "api", "host.name": "node-7"}, "api", "node-7", ""},
		{"instance beats host", map[string]any{"service.instance.id": "i-2", "host.name": "node-7"}, "", "i-2", ""},
		{"namespace without name", map[string]any{"service.namespace": "ns"}, "", "", ""},
		{"nothing", nil, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			require.NoError(t, rs.Resource().Attributes().FromRaw(tt.attrs))
			rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty().SetStartTimestamp(ts(testStart))
			_, m := one(t, FromTraces(td, testIKey))
			tg := tagsOf(m)
			for key, want := range map[string]string{
				"ai.cloud.role": tt.wantRole, "ai.cloud.roleInstance": tt.wantInst, "ai.application.ver": tt.wantVersion,
			} {
				if want == "" {
					require.NotContains(t, tg, key)
				} else {
					require.Equal(t, want, tg[key], key)
				}
			}
			// A span without ids has no correlation tags at all.
			require.NotContains(t, tg, "ai.operation.id")
			require.NotContains(t, tg, "ai.operation.parentId")
		})
	}
}

func TestRootSpanHasNoParentTag(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindServer, "root")
	s.SetParentSpanID(pcommon.SpanID{})
	_, m := one(t, FromTraces(td, testIKey))
	require.NotContains(t, tagsOf(m), "ai.operation.parentId")
	require.Equal(t, traceHex, tagsOf(m)["ai.operation.id"])
}

func TestSpanTimeAndDuration(t *testing.T) {
	tests := []struct {
		name         string
		start, end   pcommon.Timestamp
		wantTime     string
		wantDuration string
	}{
		{"normal", ts(testStart), ts(testEnd), startStr, "00:00:01.5000000"},
		{"end before start", ts(testEnd), ts(testStart), "2024-05-01T10:00:01.6234567Z", "00:00:00.0000000"},
		{"no start uses end", 0, ts(testEnd), "2024-05-01T10:00:01.6234567Z", "00:00:00.0000000"},
		{"long", ts(testStart), ts(testStart.Add(50*time.Hour + 3*time.Minute + 4*time.Second + 5*time.Microsecond)), startStr, "2.02:03:04.0000050"},
		{"sub-tick", ts(testStart), ts(testStart.Add(99)), startStr, "00:00:00.0000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, s := newSpan(ptrace.SpanKindClient, "op")
			s.SetStartTimestamp(tt.start)
			s.SetEndTimestamp(tt.end)
			_, m := one(t, FromTraces(td, testIKey))
			require.Equal(t, tt.wantTime, m["time"])
			require.Equal(t, tt.wantDuration, baseData(m)["duration"])
		})
	}
}

func TestZeroTimestampsUseConversionTime(t *testing.T) {
	td, s := newSpan(ptrace.SpanKindServer, "op")
	s.SetStartTimestamp(0)
	s.SetEndTimestamp(0)
	s.Events().AppendEmpty().SetName("e")
	before := time.Now().Add(-time.Millisecond)
	items := FromTraces(td, testIKey)
	after := time.Now().Add(time.Millisecond)
	require.Len(t, items, 2)
	var times []string
	for _, it := range items {
		m := decode(t, it)
		got, err := time.Parse(time.RFC3339Nano, m["time"].(string))
		require.NoError(t, err)
		require.True(t, got.After(before) && got.Before(after), "time %v not in [%v, %v]", got, before, after)
		times = append(times, m["time"].(string))
	}
	require.Equal(t, times[0], times[1], "one conversion, one clock reading")
}

func TestManySpansKeepOrder(t *testing.T) {
	td := ptrace.NewTraces()
	for r := range 3 {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("tenant.id", fmt.Sprintf("t%02d", r))
		for sc := range 2 {
			spans := rs.ScopeSpans().AppendEmpty().Spans()
			for i := range 2 {
				s := spans.AppendEmpty()
				s.SetName(fmt.Sprintf("r%d-s%d-%d", r, sc, i))
				s.SetKind(ptrace.SpanKindServer)
				s.SetStartTimestamp(ts(testStart))
			}
		}
	}
	items := FromTraces(td, testIKey)
	require.Len(t, items, 12)
	for i, it := range items {
		r, rest := i/4, i%4
		m := decode(t, it)
		require.Equal(t, fmt.Sprintf("r%d-s%d-%d", r, rest/2, rest%2), baseData(m)["name"])
		require.Equal(t, fmt.Sprintf("t%02d", r), propsOf(m)["tenant.id"])
	}
}

func BenchmarkFromTraces(b *testing.B) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	fillResource(rs.Resource())
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	kinds := []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindClient, ptrace.SpanKindInternal}
	for i := range 1000 {
		s := spans.AppendEmpty()
		s.SetName("GET /api/items/{id}")
		s.SetKind(kinds[i%len(kinds)])
		s.SetTraceID(traceID)
		s.SetSpanID(spanID)
		s.SetParentSpanID(parentID)
		s.SetStartTimestamp(ts(testStart))
		s.SetEndTimestamp(ts(testEnd))
		a := s.Attributes()
		a.PutStr("http.request.method", "GET")
		a.PutStr("http.route", "/api/items/{id}")
		a.PutInt("http.response.status_code", 200)
		a.PutStr("url.full", "https://api.example/api/items/42")
		a.PutStr("server.address", "api.example")
		a.PutInt("server.port", 443)
		a.PutStr("client.address", "10.0.0.1")
		a.PutStr("user_agent.original", "bench/1.0")
		a.PutStr("app.request_id", strings.Repeat("x", 32))
		a.PutInt("app.attempt", int64(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		items := FromTraces(td, testIKey)
		if len(items) != 1000 {
			b.Fatal(len(items))
		}
	}
}
