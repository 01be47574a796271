package envelope

import (
	"go.opentelemetry.io/collector/pdata/plog"
)

// customEventName marks a log record as a custom event, as the Azure Monitor
// OpenTelemetry distros emit them; its value names the event.
const customEventName = "microsoft.custom_event.name"

// FromLogs converts every log record to an envelope: a custom event if it
// carries microsoft.custom_event.name, an exception if it carries
// exception.type or exception.message, else a trace message.
func FromLogs(ld plog.Logs, iKey string) []Item {
	c := newConverter(iKey, ld.LogRecordCount())
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		rl := rls.At(i)
		res := newResource(rl.Resource())
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			records := sls.At(j).LogRecords()
			for k := range records.Len() {
				c.logRecord(&res, records.At(k))
			}
		}
	}
	return c.items
}

func (c *converter) logRecord(res *resource, lr plog.LogRecord) {
	attrs := lr.Attributes()
	tg := tags{traceID: lr.TraceID(), parentID: lr.SpanID()}
	t := c.time(lr.Timestamp(), lr.ObservedTimestamp())
	c.startProps(res)
	c.addProps(attrs)

	if name, ok := attrs.Get(customEventName); ok {
		c.open(res, &tg, nameEvent, baseEvent, t)
		c.required("name", name.AsString(), maxEventName)
		c.finish(CustomEvent)
		return
	}

	_, hasType := attrs.Get("exception.type")
	_, hasMessage := attrs.Get("exception.message")
	if hasType || hasMessage {
		typeName := strAttr(attrs, "exception.type")
		message := strAttr(attrs, "exception.message")
		if message == "" {
			// ExceptionData has no other place for the body.
			message = lr.Body().AsString()
		}
		// An exception with no severity is still an error.
		level := severity(lr.SeverityNumber())
		if level == noSeverity {
			level = sevError
		}
		c.open(res, &tg, nameException, baseException, t)
		c.exception(typeName, message, strAttr(attrs, "exception.stacktrace"))
		c.severity(level)
		c.finish(Exception)
		return
	}

	c.open(res, &tg, nameMessage, baseMessage, t)
	c.required("message", lr.Body().AsString(), maxMessage)
	c.severity(severity(lr.SeverityNumber()))
	c.finish(Trace)
}

// severity maps the OTel severity ranges to Application Insights levels;
// unspecified (or out of range) gives noSeverity, leaving the field out.
func severity(n plog.SeverityNumber) int {
	switch {
	case n >= plog.SeverityNumberTrace && n <= plog.SeverityNumberDebug4:
		return sevVerbose
	case n >= plog.SeverityNumberInfo && n <= plog.SeverityNumberInfo4:
		return sevInfo
	case n >= plog.SeverityNumberWarn && n <= plog.SeverityNumberWarn4:
		return sevWarning
	case n >= plog.SeverityNumberError && n <= plog.SeverityNumberError4:
		return sevError
	case n >= plog.SeverityNumberFatal && n <= plog.SeverityNumberFatal4:
		return sevCritical
	}
	return noSeverity
}
