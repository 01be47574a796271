package envelope

import (
	"math"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Data point kinds of the Breeze DataPoint contract.
const (
	kindMeasurement = 0
	kindAggregation = 1
)

// FromMetrics converts every data point to one MetricData envelope.
//
// JSON cannot carry NaN or ±Inf, and the service requires a value, so a data
// point whose value (gauge/sum value, or histogram/summary sum) is not finite
// is dropped; a non-finite min or max only leaves that field out. Points
// flagged "no recorded value" are dropped too (they mark staleness, not
// data), as are number points with no value and histograms that have a
// count but no sum (reporting their sum as 0 would be a lie).
//
// Sums are sent as measurements of their current value whatever their
// temporality, as the contrib exporter does.
func FromMetrics(md pmetric.Metrics, iKey string) []Item {
	c := newConverter(iKey, md.DataPointCount())
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		rm := rms.At(i)
		res := newResource(rm.Resource())
		sms := rm.ScopeMetrics()
		for j := range sms.Len() {
			metrics := sms.At(j).Metrics()
			for k := range metrics.Len() {
				c.metric(&res, metrics.At(k))
			}
		}
	}
	return c.items
}

// point is one data point reduced to what a Breeze DataPoint carries.
type point struct {
	kind           int
	value          float64
	count          uint64
	min, max       float64
	hasMin, hasMax bool
}

// aggregatePoint is what histogram and exponential histogram data points
// share, and all an Aggregation needs.
type aggregatePoint interface {
	Flags() pmetric.DataPointFlags
	Count() uint64
	HasSum() bool
	Sum() float64
	HasMin() bool
	Min() float64
	HasMax() bool
	Max() float64
	Timestamp() pcommon.Timestamp
	StartTimestamp() pcommon.Timestamp
	Attributes() pcommon.Map
}

// aggregatedPoints converts the n points at(0..n) into Aggregation metrics.
func aggregatedPoints[P aggregatePoint](c *converter, res *resource, name string, n int, at func(int) P) {
	for i := range n {
		dp := at(i)
		if dp.Flags().NoRecordedValue() {
			continue
		}
		p, ok := aggregation(dp.Count(), dp.HasSum(), dp.Sum(), dp.HasMin(), dp.Min(), dp.HasMax(), dp.Max())
		if ok {
			c.metricPoint(res, name, &p, c.time(dp.Timestamp(), dp.StartTimestamp()), dp.Attributes())
		}
	}
}

func (c *converter) metric(res *resource, m pmetric.Metric) {
	name := m.Name()
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		c.numberPoints(res, name, m.Gauge().DataPoints())
	case pmetric.MetricTypeSum:
		c.numberPoints(res, name, m.Sum().DataPoints())
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		aggregatedPoints(c, res, name, dps.Len(), dps.At)
	case pmetric.MetricTypeExponentialHistogram:
		dps := m.ExponentialHistogram().DataPoints()
		aggregatedPoints(c, res, name, dps.Len(), dps.At)
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := range dps.Len() {
			dp := dps.At(i)
			if dp.Flags().NoRecordedValue() {
				continue
			}
			// The 0 and 1 quantiles are the minimum and maximum.
			var hasMin, hasMax bool
			var lo, hi float64
			qs := dp.QuantileValues()
			for j := range qs.Len() {
				switch q := qs.At(j); q.Quantile() {
				case 0:
					hasMin, lo = true, q.Value()
				case 1:
					hasMax, hi = true, q.Value()
				}
			}
			p, ok := aggregation(dp.Count(), true, dp.Sum(), hasMin, lo, hasMax, hi)
			if ok {
				c.metricPoint(res, name, &p, c.time(dp.Timestamp(), dp.StartTimestamp()), dp.Attributes())
			}
		}
	}
}

func (c *converter) numberPoints(res *resource, name string, dps pmetric.NumberDataPointSlice) {
	for i := range dps.Len() {
		dp := dps.At(i)
		if dp.Flags().NoRecordedValue() {
			continue
		}
		p := point{kind: kindMeasurement, count: 1}
		switch dp.ValueType() {
		case pmetric.NumberDataPointValueTypeInt:
			p.value = float64(dp.IntValue())
		case pmetric.NumberDataPointValueTypeDouble:
			p.value = dp.DoubleValue()
			if !finite(p.value) {
				continue
			}
		default:
			continue
		}
		c.metricPoint(res, name, &p, c.time(dp.Timestamp(), dp.StartTimestamp()), dp.Attributes())
	}
}

// aggregation builds an Aggregation point, or reports false if it has no
// value JSON can carry.
func aggregation(count uint64, hasSum bool, sum float64, hasMin bool, lo float64, hasMax bool, hi float64) (point, bool) {
	if !hasSum {
		if count != 0 {
			return point{}, false
		}
		sum = 0
	}
	if !finite(sum) {
		return point{}, false
	}
	p := point{kind: kindAggregation, value: sum, count: count}
	// An empty aggregation has no extremes, whatever the fields hold.
	if count != 0 {
		p.min, p.hasMin = lo, hasMin && finite(lo)
		p.max, p.hasMax = hi, hasMax && finite(hi)
	}
	return p, true
}

func (c *converter) metricPoint(res *resource, name string, p *point, t time.Time, attrs pcommon.Map) {
	c.startProps(res)
	c.addProps(attrs)
	c.open(res, &tags{}, nameMetric, baseMetric, t)
	if name == "" {
		name = notAvailable
	}
	b := append(c.buf, `,"metrics":[{"name":`...)
	b = appendString(b, truncate(name, maxName))
	b = append(b, `,"kind":`...)
	b = strconv.AppendInt(b, int64(p.kind), 10)
	b = append(b, `,"value":`...)
	b = appendFloat(b, p.value)
	// The contract's count is an int32.
	b = append(b, `,"count":`...)
	b = strconv.AppendUint(b, min(p.count, math.MaxInt32), 10)
	if p.hasMin {
		b = append(b, `,"min":`...)
		b = appendFloat(b, p.min)
	}
	if p.hasMax {
		b = append(b, `,"max":`...)
		b = appendFloat(b, p.max)
	}
	c.buf = append(b, "}]"...)
	c.finish(CustomMetric)
}
