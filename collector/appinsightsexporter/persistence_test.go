package appinsightsexporter

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/extension"
)

// storageHost is a minimal component.Host that offers one storage extension.
type storageHost struct {
	exts map[component.ID]component.Component
}

func (h *storageHost) GetExtensions() map[component.ID]component.Component { return h.exts }

var storageID = component.MustNewIDWithName("file_storage", "queue")

// startFileStorage starts a file_storage extension on dir.
func startFileStorage(t *testing.T, dir string) (*storageHost, extension.Extension) {
	t.Helper()
	f := filestorage.NewFactory()
	cfg := f.CreateDefaultConfig().(*filestorage.Config)
	cfg.Directory = dir
	cfg.Compaction.Directory = dir
	ext, err := f.Create(context.Background(), extension.Settings{
		ID:                storageID,
		TelemetrySettings: componenttest.NewNopTelemetrySettings(),
		BuildInfo:         component.NewDefaultBuildInfo(),
	}, cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(context.Background(), componenttest.NewNopHost()))
	return &storageHost{exts: map[component.ID]component.Component{storageID: ext}}, ext
}

// TestPersistentQueueSurvivesRestart sends data while the service answers
// 503, stops the exporter, starts a new one on the same storage with the
// service healthy, and checks that every item arrives exactly once and that
// the counts tell the truth.
func TestPersistentQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	var healthy atomic.Bool
	var accepted atomic.Int64
	b := newBreeze(t, func(_ int, r received, w http.ResponseWriter) {
		if !healthy.Load() {
			answerJSON(w, http.StatusServiceUnavailable, trackResponse{})
			return
		}
		accepted.Add(int64(len(r.lines)))
		ok(w, r)
	})
	cfg := testConfig(b.url())
	cfg.QueueSettings.Get().StorageID = &storageID
	// The first failure waits long enough for the exporter to be stopped
	// while it waits.
	cfg.BackOffConfig.InitialInterval = time.Hour
	cfg.BackOffConfig.MaxInterval = time.Hour

	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, names(4, fmt.Sprintf("dep-%d", i))...)
	}

	// First life: the service is down.
	ev1 := newEnv(t)
	host1, ext1 := startFileStorage(t, dir)
	exp1 := newTraces(t, ev1, cfg)
	require.NoError(t, exp1.Start(context.Background(), host1))
	for i := 0; i < 5; i++ {
		require.NoError(t, exp1.ConsumeTraces(context.Background(), spans(want[4*i:4*i+4]...)))
	}
	ev1.waitFor(t, "a first refused attempt", func() bool { return ev1.counter(t, metricRetried, nil) > 0 })
	require.NoError(t, exp1.Shutdown(context.Background()))
	require.NoError(t, ext1.Shutdown(context.Background()))

	c1 := ev1.totals(t)
	require.Zero(t, c1.succeeded)
	require.Zero(t, c1.dropped, "what waits for a retry is kept on disk, not dropped")
	require.Positive(t, c1.retried)
	require.Zero(t, accepted.Load())
	downRequests := len(b.requests())

	// Second life: the service is back.
	healthy.Store(true)
	ev2 := newEnv(t)
	host2, ext2 := startFileStorage(t, dir)
	exp2 := newTraces(t, ev2, cfg)
	require.NoError(t, exp2.Start(context.Background(), host2))
	ev2.waitFor(t, "all items delivered", func() bool { return ev2.counter(t, metricSucceeded, nil) >= int64(len(want)) })
	require.NoError(t, exp2.Shutdown(context.Background()))
	require.NoError(t, ext2.Shutdown(context.Background()))

	var got []string
	for _, r := range b.requests()[downRequests:] {
		got = append(got, lineNames(t, r.lines)...)
	}
	sort.Strings(got)
	sort.Strings(want)
	require.Equal(t, want, got, "every item arrives exactly once")
	require.Equal(t, counts{succeeded: int64(len(want))}, ev2.totals(t))
	require.EqualValues(t, len(want), accepted.Load())
}
