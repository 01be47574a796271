// Package appinsightsexporter is the telemux_appinsights exporter: it sends
// traces, logs and metrics to Azure Application Insights (the Breeze
// ingestion API, v2.1/track) through exporterhelper's sending queue, so that
// data survives restarts in a persistent queue, every failure reaches the
// collector, and every item is counted as succeeded, retried or dropped with
// a reason.
package appinsightsexporter

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"telemux.io/collector/appinsightsexporter/internal/envelope"
)

// TypeStr is the component type of this exporter.
const TypeStr = "telemux_appinsights"

var componentType = component.MustNewType(TypeStr)

const (
	defaultTimeout        = 10 * time.Second
	defaultMaxAge         = 47 * time.Hour
	defaultQueueSizeBytes = 64 << 20
	defaultNumConsumers   = 2
	defaultFlushTimeout   = 200 * time.Millisecond
	defaultBatchMinBytes  = 256 << 10
	defaultBatchMaxBytes  = 1 << 20
	defaultReportInterval = 15 * time.Minute
)

// NewFactory returns the factory of the telemux_appinsights exporter.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(
		componentType,
		createDefaultConfig,
		exporter.WithTraces(createTraces, component.StabilityLevelBeta),
		exporter.WithLogs(createLogs, component.StabilityLevelBeta),
		exporter.WithMetrics(createMetrics, component.StabilityLevelBeta),
	)
}

func createDefaultConfig() component.Config {
	return &Config{
		TimeoutConfig: exporterhelper.TimeoutConfig{Timeout: defaultTimeout},
		BackOffConfig: configretry.BackOffConfig{
			Enabled:             true,
			InitialInterval:     time.Second,
			MaxInterval:         60 * time.Second,
			MaxElapsedTime:      0, // never give up here: max_age does, and counts it
			Multiplier:          1.5,
			RandomizationFactor: 0.5,
		},
		QueueSettings: configoptional.Some(exporterhelper.QueueBatchConfig{
			Sizer:           exporterhelper.RequestSizerTypeBytes,
			QueueSize:       defaultQueueSizeBytes,
			NumConsumers:    defaultNumConsumers,
			BlockOnOverflow: false,
			Batch: configoptional.Some(exporterhelper.BatchConfig{
				FlushTimeout: defaultFlushTimeout,
				Sizer:        exporterhelper.RequestSizerTypeBytes,
				MinSize:      defaultBatchMinBytes,
				MaxSize:      defaultBatchMaxBytes,
			}),
		}),
		MaxAge: defaultMaxAge,
		// Off unless the section is present; present, even empty, it
		// reports every 15 minutes.
		DeliveryReport: configoptional.Default(DeliveryReportConfig{Interval: defaultReportInterval}),
	}
}

func createTraces(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	return newTracesExporter(ctx, set, cfg.(*Config), envelope.FromTraces)
}

func createLogs(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	return newLogsExporter(ctx, set, cfg.(*Config), envelope.FromLogs)
}

func createMetrics(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	return newMetricsExporter(ctx, set, cfg.(*Config), envelope.FromMetrics)
}
