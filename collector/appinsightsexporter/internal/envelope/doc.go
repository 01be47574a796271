// Package envelope converts OTLP traces, logs and metrics into Azure
// Application Insights ("Breeze") envelopes, serialized as compact JSON that
// the track endpoint accepts.
//
// Why it exists: the contrib azuremonitorexporter maps pdata onto the
// contract types of github.com/microsoft/ApplicationInsights-Go and hands them
// to that SDK's channel, which is unmaintained. telemux owns its transport, so
// all it needs from the mapping is bytes; this package produces them directly
// and keeps the mapping users know from the Azure Monitor exporters:
//
//   - SERVER and CONSUMER spans become requests, every other kind a remote
//     dependency; span events become traces (MessageData) or, for events named
//     "exception", exceptions. A span with N events yields 1+N items, span
//     first.
//   - Log records become traces, exceptions (exception.type or
//     exception.message set) or custom events (microsoft.custom_event.name
//     set).
//   - Every metric data point becomes one MetricData envelope.
//
// Resource attributes and item attributes are all carried as string
// properties, item attributes winning on equal keys, with keys and values cut
// to the lengths the service accepts (150 and 8192 characters).
//
// The output is deterministic: the same input gives the same bytes. The one
// exception is an item whose timestamps are all zero; it is stamped with the
// time of the conversion, because the service rejects items older than 48
// hours and an epoch time would be dropped silently.
//
// The JSON is written by hand rather than with encoding/json: it runs once
// per span on the hot path, the shapes are fixed, and sorting property keys
// ourselves is what keeps the output deterministic without a map and
// reflection per item.
package envelope // import "telemux.io/collector/appinsightsexporter/internal/envelope"
