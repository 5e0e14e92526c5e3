// SPDX-License-Identifier: Apache-2.0

// Package metrics serves nstrace's health to Prometheus: events written by
// kind, events the kernel could not deliver by reason, undecodable
// records, how full the ring buffer is, and which build runs.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/version"
)

// Source is what the metrics read when scraped; it must be safe to call
// from another goroutine.
type Source interface {
	// Lost returns the kernel's counts of undelivered events by reason.
	Lost() [event.LostReasons]uint64
	// Undecodable counts records that could not be decoded.
	Undecodable() uint64
	// RingBuffer returns the bytes queued and the buffer's size.
	RingBuffer() (queued, size int)
}

// Metrics counts what the session writes; the rest is read from Source
// at each scrape, so the endpoint always agrees with the summary.
type Metrics struct {
	reg    *prometheus.Registry
	events [event.KindCount]prometheus.Counter
}

// New registers nstrace's metrics.
func New(src Source, info version.Info) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nstrace_events_total",
		Help: "Events written to the feed, by kind.",
	}, []string{"kind"})
	for _, k := range event.Traced {
		if k.OnlySelects() {
			continue
		}
		m.events[k] = events.WithLabelValues(k.String())
	}
	lost := prometheus.NewDesc("nstrace_lost_events_total", "Events the kernel side could not deliver, by reason.", []string{"reason"}, nil)
	m.reg.MustRegister(events,
		collector{lost, func(ch chan<- prometheus.Metric) {
			counts := src.Lost()
			for r := event.LostReason(0); r < event.LostReasons; r++ {
				ch <- prometheus.MustNewConstMetric(lost, prometheus.CounterValue, float64(counts[r]), r.String())
			}
		}},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nstrace_undecodable_records_total",
			Help: "Records from the kernel side that could not be decoded.",
		}, func() float64 { return float64(src.Undecodable()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nstrace_ring_buffer_queued_bytes",
			Help: "Bytes of records waiting in the ring buffer.",
		}, func() float64 { q, _ := src.RingBuffer(); return float64(q) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nstrace_ring_buffer_size_bytes",
			Help: "The ring buffer's size.",
		}, func() float64 { _, s := src.RingBuffer(); return float64(s) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nstrace_build_info",
			Help: "The running nstrace: version, commit, Go and cilium/ebpf versions, BPF object sha256.",
			ConstLabels: prometheus.Labels{
				"version": info.Version, "commit": info.Commit, "goversion": info.Go,
				"ebpf": info.Ebpf, "bpf_object": info.BPFObject,
			},
		}, func() float64 { return 1 }),
	)
	return m
}

// Event counts an event written to the feed.
func (m *Metrics) Event(e *event.Event) {
	if m == nil || int(e.Kind) >= len(m.events) || m.events[e.Kind] == nil {
		return
	}
	m.events[e.Kind].Inc()
}

// Serve listens on addr and serves /metrics until the listener closes.
func (m *Metrics) Serve(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serving metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			_ = ln.Close()
		}
	}()
	return ln, nil
}

// collector is a metric read by a function at each scrape.
type collector struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
