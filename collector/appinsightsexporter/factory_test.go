package appinsightsexporter

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

func TestFactory(t *testing.T) {
	f := NewFactory()
	require.Equal(t, "telemux_appinsights", f.Type().String())
	require.Equal(t, component.StabilityLevelBeta, f.TracesStability())
	require.Equal(t, component.StabilityLevelBeta, f.LogsStability())
	require.Equal(t, component.StabilityLevelBeta, f.MetricsStability())

	cfg := f.CreateDefaultConfig().(*Config)
	cfg.ConnectionString = configopaque.String("InstrumentationKey=" + testIKey)
	set := newEnv(t).set
	ctx := context.Background()

	tr, err := f.CreateTraces(ctx, set, cfg)
	require.NoError(t, err)
	lg, err := f.CreateLogs(ctx, set, cfg)
	require.NoError(t, err)
	mt, err := f.CreateMetrics(ctx, set, cfg)
	require.NoError(t, err)
	for _, c := range []component.Component{tr, lg, mt} {
		require.NoError(t, c.Start(ctx, componenttest.NewNopHost()))
		require.NoError(t, c.Shutdown(ctx))
	}

	cfg.ConnectionString = "InstrumentationKey=nope"
	_, err = f.CreateTraces(ctx, set, cfg)
	require.Error(t, err)
}

// TestFactoryEndToEnd goes through the factory and the real envelope
// conversion.
func TestFactoryEndToEnd(t *testing.T) {
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) { ok(w, r) })
	ev := newEnv(t)
	cfg := testConfig(b.url())
	f := NewFactory()
	ctx := context.Background()

	tr, err := f.CreateTraces(ctx, ev.set, cfg)
	require.NoError(t, err)
	lg, err := f.CreateLogs(ctx, ev.set, cfg)
	require.NoError(t, err)
	mt, err := f.CreateMetrics(ctx, ev.set, cfg)
	require.NoError(t, err)
	for _, c := range []component.Component{tr, lg, mt} {
		require.NoError(t, c.Start(ctx, componenttest.NewNopHost()))
	}

	require.NoError(t, tr.ConsumeTraces(ctx, spans("srv-checkout")))
	require.NoError(t, lg.ConsumeLogs(ctx, logRecords("hello")))
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("queue.depth")
	m.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(3)
	require.NoError(t, mt.ConsumeMetrics(ctx, md))
	require.NoError(t, lg.ConsumeLogs(ctx, plog.NewLogs()), "empty data is a no-op")

	ev.waitFor(t, "3 items succeeded", func() bool { return ev.counter(t, metricSucceeded, nil) >= 3 })
	for _, c := range []component.Component{tr, lg, mt} {
		require.NoError(t, c.Shutdown(ctx))
	}
	require.Equal(t, counts{succeeded: 3}, ev.totals(t))
	require.EqualValues(t, 1, ev.counter(t, metricSucceeded, map[string]string{attrTelemetryType: "REQUEST"}))
	require.EqualValues(t, 1, ev.counter(t, metricSucceeded, map[string]string{attrTelemetryType: "TRACE"}))
	require.EqualValues(t, 1, ev.counter(t, metricSucceeded, map[string]string{attrTelemetryType: "CUSTOM_METRIC"}))

	var lines []string
	for _, r := range b.requests() {
		lines = append(lines, r.lines...)
	}
	require.Len(t, lines, 3)
	for _, l := range lines {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &v), "each line is one JSON envelope")
		require.True(t, strings.Contains(l, testIKey), "each envelope carries the instrumentation key")
	}
}
