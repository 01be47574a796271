package envelope

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// FromTraces converts every span, and every span event, to an envelope: the
// span first, then its events in order.
func FromTraces(td ptrace.Traces, iKey string) []Item {
	c := newConverter(iKey, td.SpanCount())
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		res := newResource(rs.Resource())
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				c.span(&res, spans.At(k))
			}
		}
	}
	return c.items
}

// class is the semantic-convention family a span belongs to, which decides
// how its attributes fill the Breeze fields.
type class int

const (
	classOther class = iota
	classRPC
	classHTTP
	classDB
	classMessaging
)

// classify checks RPC before HTTP, as the contrib exporter does, since gRPC
// instrumentations may also record HTTP attributes.
func classify(m pcommon.Map) class {
	switch {
	case strAttr(m, "rpc.system.name", "rpc.system") != "":
		return classRPC
	case strAttr(m, "http.request.method", "http.method") != "":
		return classHTTP
	case strAttr(m, "db.system.name", "db.system") != "":
		return classDB
	case strAttr(m, "messaging.system") != "":
		return classMessaging
	}
	return classOther
}

func (c *converter) span(res *resource, s ptrace.Span) {
	attrs := s.Attributes()
	cls := classify(attrs)
	code, success := outcome(s.Status().Code(), attrs)
	tg := tags{
		traceID:  s.TraceID(),
		parentID: s.ParentSpanID(),
		userID:   strAttr(attrs, "enduser.id"),
	}
	t := c.time(s.StartTimestamp(), s.EndTimestamp())

	c.startProps(res)
	c.addProps(attrs)

	var opName string
	switch s.Kind() {
	case ptrace.SpanKindServer, ptrace.SpanKindConsumer:
		name := requestName(s.Name(), attrs, cls)
		// The request names the operation for everything correlated to it,
		// as the Azure SDKs do; that is what the portal groups by.
		opName = name
		tg.opName = name
		c.open(res, &tg, nameRequest, baseRequest, t)
		c.spanID(s.SpanID())
		c.optStr("name", name, maxName)
		c.duration(s)
		c.str("responseCode", code, maxResultCode)
		c.boolean("success", success)
		c.optStr("source", requestSource(attrs, cls), maxSource)
		c.optStr("url", requestURL(attrs), maxURL)
		c.finish(Request)
	default:
		name, typ, data, target := dependency(s, attrs, cls)
		c.open(res, &tg, nameDependency, baseDependency, t)
		c.required("name", name, maxName)
		c.spanID(s.SpanID())
		c.str("resultCode", code, maxResultCode)
		c.duration(s)
		c.boolean("success", success)
		c.optStr("data", data, maxData)
		c.optStr("target", target, maxTarget)
		c.optStr("type", typ, maxType)
		c.finish(Dependency)
	}

	events := s.Events()
	for i := range events.Len() {
		c.spanEvent(res, s, events.At(i), opName)
	}
}

// spanID writes the required "id" of a request or dependency.
func (c *converter) spanID(id pcommon.SpanID) {
	if id.IsEmpty() {
		c.str("id", notAvailable, maxID)
		return
	}
	c.buf = append(c.buf, `,"id":"`...)
	c.buf = appendHex(c.buf, id[:])
	c.buf = append(c.buf, '"')
}

// duration writes end-start; a span that ends before it starts, or has no
// start, lasted zero.
func (c *converter) duration(s ptrace.Span) {
	var ns uint64
	if start, end := s.StartTimestamp(), s.EndTimestamp(); start != 0 && end > start {
		ns = uint64(end - start)
	}
	c.buf = append(c.buf, `,"duration":"`...)
	c.buf = appendDuration(c.buf, ns)
	c.buf = append(c.buf, '"')
}

// outcome gives a span's result code and success.
//
// Result code: the HTTP status code, else the RPC status code, else the
// database status code, else "0" for a span not marked as an error and "1"
// for one that is (the service requires a code; the OTel status numbers would
// make "1" mean OK, which reads wrong in the portal).
//
// Success: an ERROR status fails and an OK status succeeds whatever the
// attributes say (OK is the application vouching for the outcome). An UNSET
// status with an HTTP status code succeeds for 100-399 only, for requests as
// for dependencies: Application Insights counts a 4xx request as failed, and
// that is the contrib exporter's default too. Otherwise UNSET succeeds.
func outcome(st ptrace.StatusCode, m pcommon.Map) (string, bool) {
	success := st != ptrace.StatusCodeError
	if code, ok := intAttr(m, "http.response.status_code", "http.status_code"); ok && code > 0 {
		if st == ptrace.StatusCodeUnset {
			success = code >= 100 && code < 400
		}
		return strconv.FormatInt(code, 10), success
	}
	if s := strAttr(m, "rpc.response.status_code"); s != "" {
		return s, success
	}
	if code, ok := intAttr(m, "rpc.grpc.status_code"); ok {
		return strconv.FormatInt(code, 10), success
	}
	if s := strAttr(m, "db.response.status_code"); s != "" {
		return s, success
	}
	if success {
		return "0", true
	}
	return "1", false
}

func httpMethod(m pcommon.Map) string {
	method := strAttr(m, "http.request.method", "http.method")
	if method == "_OTHER" {
		if orig := strAttr(m, "http.request.method_original"); orig != "" {
			return orig
		}
	}
	return method
}

// requestName is "METHOD /route" for HTTP requests with a route, as Azure
// names requests, else the span name (which semconv already makes low
// cardinality; a URL path would not be).
func requestName(spanName string, m pcommon.Map, cls class) string {
	if cls == classHTTP {
		if route := strAttr(m, "http.route"); route != "" {
			return httpMethod(m) + " " + withPrefix(route, "/")
		}
	}
	return spanName
}

// requestURL is url.full (http.url), else one built from scheme, host, port
// and path, else empty.
func requestURL(m pcommon.Map) string {
	if u := strAttr(m, "url.full", "http.url"); u != "" {
		return u
	}
	scheme := strAttr(m, "url.scheme", "http.scheme")
	port, _ := intAttr(m, "server.port", "net.host.port")
	host := strAttr(m, "server.address")
	if host == "" {
		// http.host is the Host header and carries its own port.
		if host = strAttr(m, "http.host"); host != "" {
			port = 0
		} else {
			host = strAttr(m, "net.host.name")
		}
	}
	return buildURL(scheme, host, port, m)
}

// requestSource is the caller: its address, or for messages where they came
// from.
func requestSource(m pcommon.Map, cls class) string {
	if cls == classMessaging {
		return messagingPeer(m)
	}
	return strAttr(m, "client.address", "http.client_ip", "network.peer.address", "net.peer.ip")
}

// dependency maps a CLIENT, PRODUCER, INTERNAL or UNSPECIFIED span to the
// dependency name, type, data and target.
func dependency(s ptrace.Span, m pcommon.Map, cls class) (name, typ, data, target string) {
	name = s.Name()
	switch cls {
	case classHTTP:
		typ = "HTTP"
		data = dependencyURL(m)
		scheme := strAttr(m, "url.scheme", "http.scheme")
		var path string
		if u, err := url.Parse(data); data != "" && err == nil {
			target = stripDefaultPort(u.Host, u.Scheme)
			path = u.Path
		} else {
			path, _, _ = strings.Cut(strAttr(m, "url.path", "http.target"), "?")
		}
		if target == "" {
			target = peer(m, scheme)
		}
		// "GET /path", as Azure names HTTP dependencies; semconv span names
		// are often just the method.
		if method := httpMethod(m); method != "" && (data != "" || path != "") {
			if path == "" {
				path = "/"
			}
			name = method + " " + path
		}
	case classDB:
		typ = dbType(strAttr(m, "db.system.name", "db.system"))
		data = strAttr(m, "db.query.text", "db.statement", "db.operation.name", "db.operation")
		target = peer(m, "")
		if db := strAttr(m, "db.namespace", "db.name"); db != "" {
			target = joinNonEmpty(target, "|", db)
		}
	case classRPC:
		typ = strAttr(m, "rpc.system.name", "rpc.system")
		if typ == "grpc" {
			typ = "gRPC"
		}
		data = s.Name()
		target = peer(m, "")
	case classMessaging:
		typ = strAttr(m, "messaging.system")
		target = messagingPeer(m)
	default:
		target = peer(m, "")
	}
	// Azure shows in-process work as InProc whatever it touched.
	if k := s.Kind(); k == ptrace.SpanKindInternal || k == ptrace.SpanKindUnspecified {
		typ = "InProc"
	}
	return name, typ, data, target
}

// dependencyURL is url.full (http.url), else one built from the peer.
func dependencyURL(m pcommon.Map) string {
	if u := strAttr(m, "url.full", "http.url"); u != "" {
		return u
	}
	scheme := strAttr(m, "url.scheme", "http.scheme")
	port, _ := intAttr(m, "server.port", "net.peer.port")
	return buildURL(scheme, strAttr(m, "server.address", "net.peer.name"), port, m)
}

func buildURL(scheme, host string, port int64, m pcommon.Map) string {
	if scheme == "" || host == "" {
		return ""
	}
	target := strAttr(m, "url.path")
	if target != "" {
		if q := strAttr(m, "url.query"); q != "" {
			target += "?" + strings.TrimPrefix(q, "?")
		}
	} else if target = strAttr(m, "http.target"); target == "" {
		return ""
	}
	return scheme + "://" + hostPort(host, port, scheme) + withPrefix(target, "/")
}

// peer is the remote end of a span as host[:port].
func peer(m pcommon.Map, scheme string) string {
	host := strAttr(m, "server.address", "net.peer.name", "network.peer.address", "net.peer.ip")
	if host == "" {
		return ""
	}
	port, _ := intAttr(m, "server.port", "net.peer.port", "network.peer.port")
	return hostPort(host, port, scheme)
}

// messagingPeer is "host/destination", either part alone if the other is missing.
func messagingPeer(m pcommon.Map) string {
	return joinNonEmpty(peer(m, ""), "/", strAttr(m, "messaging.destination.name", "messaging.destination"))
}

// hostPort joins host and port, leaving out a missing or default port so
// that one server is one target whichever attributes described it.
func hostPort(host string, port int64, scheme string) string {
	if port <= 0 || (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		return host
	}
	return net.JoinHostPort(host, strconv.FormatInt(port, 10))
}

func stripDefaultPort(host, scheme string) string {
	switch scheme {
	case "http":
		return strings.TrimSuffix(host, ":80")
	case "https":
		return strings.TrimSuffix(host, ":443")
	}
	return host
}

// dbType names SQL engines "SQL", the type Application Insights draws as a
// database, and keeps any other db.system verbatim, as the Azure Monitor
// exporters do.
func dbType(system string) string {
	switch system {
	case "mssql", "microsoft.sql_server", "db2", "ibm.db2", "derby", "mariadb", "oracle", "oracle.db",
		"sqlite", "other_sql", "hsqldb", "h2":
		return "SQL"
	}
	return system
}

func joinNonEmpty(a, sep, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + sep + b
}

func withPrefix(s, prefix string) string {
	if strings.HasPrefix(s, prefix) {
		return s
	}
	return prefix + s
}

// spanEvent converts one span event, correlated to its span: an event named
// "exception" becomes an exception, any other a trace message named after it.
func (c *converter) spanEvent(res *resource, s ptrace.Span, ev ptrace.SpanEvent, opName string) {
	tg := tags{traceID: s.TraceID(), parentID: s.SpanID(), opName: opName}
	t := c.time(ev.Timestamp(), s.StartTimestamp(), s.EndTimestamp())
	attrs := ev.Attributes()
	c.startProps(res)
	c.addProps(attrs)
	if ev.Name() == "exception" {
		c.open(res, &tg, nameException, baseException, t)
		c.exception(strAttr(attrs, "exception.type"), strAttr(attrs, "exception.message"), strAttr(attrs, "exception.stacktrace"))
		c.severity(sevError)
		c.finish(Exception)
		return
	}
	c.open(res, &tg, nameMessage, baseMessage, t)
	c.required("message", ev.Name(), maxMessage)
	c.finish(Trace)
}

// exception writes the single-element "exceptions" array of ExceptionData.
func (c *converter) exception(typeName, message, stack string) {
	if typeName == "" {
		typeName = notAvailable
	}
	c.buf = append(c.buf, `,"exceptions":[{"typeName":`...)
	c.buf = appendString(c.buf, truncate(typeName, maxTypeName))
	c.required("message", message, maxMessage)
	c.boolean("hasFullStack", stack != "")
	c.optStr("stack", stack, maxMessage)
	c.buf = append(c.buf, "}]"...)
}
