// hallmark-loadgen: the benchmarks' load generator (issue 10). It is Go on purpose: the requests
// come from a client that shares no code, runtime or event loop with the server, so that what is
// measured is the server's work alone. Built from source by bench/loadgen.ts with Debian's
// golang-go (GO111MODULE=off, standard library only).
//
// Every connection is its own keep-alive mutual-TLS connection (one transport each, one request
// in flight), opened and used once before the measured window, so the window pays for no
// handshake. Closed loop by default (each connection sends its next request when the answer
// arrives); with -rate, open loop (requests are due at fixed times and their latency counts from
// when they were due, so queueing shows). The server's CPU (utime+stime from /proc/PID/stat) is
// read at the window's edges. The result is one JSON object on stdout.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// The kernel's share of CPUSeconds (stime): system calls, and on loopback the TCP stack's
	// work for the receiving side too, and the wake-ups of the load generator.
	SysCPUSeconds float64 `json:"sys_cpu_seconds"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	// Fairness: the fewest answers any connection got in the window, the most, and the longest
	// any one request waited (a starved connection shows as min_per_conn 0 or a huge max_ms).
	MinPerConn int64 `json:"min_per_conn"`
	MaxPerConn int64 `json:"max_per_conn"`
	Conns      int   `json:"conns"`
}

// cpuSeconds is the CPU (utime+stime, and stime alone) of the server process and of its
// children, recursively: a server with `--workers N` is a primary and N worker processes, and all
// of their CPU is the server's.
func cpuSeconds(pid int) (total, sys float64) {
	if pid <= 0 {
		return 0, 0
	}
	total, sys = ownCPUSeconds(pid)
	for _, child := range childrenOf(pid) {
		t, k := cpuSeconds(child)
		total += t
		sys += k
	}
	return total, sys
}

// childrenOf lists a process's live children from /proc/PID/task/*/children (Linux 3.5+).
func childrenOf(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func ownCPUSeconds(pid int) (total, sys float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	u, _ := strconv.ParseFloat(fields[11], 64)
	k, _ := strconv.ParseFloat(fields[12], 64)
	return (u + k) / 100, k / 100 // USER_HZ is 100 on Linux
}

func readBodies(path string) [][]byte {
	if path == "" {
		return [][]byte{nil}
	}
	f, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			out = append(out, append([]byte(nil), line...))
		}
	}
	if len(out) == 0 {
		fail(fmt.Errorf("no bodies in %s", path))
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

func main() {
	url := flag.String("url", "", "the URL to ask")
	method := flag.String("method", "POST", "HTTP method")
	bodiesFile := flag.String("bodies", "", "request bodies, one JSON document a line, used in turn")
	certFile := flag.String("cert", "", "client certificate chain (PEM)")
	keyFile := flag.String("key", "", "client key (PEM)")
	caFile := flag.String("ca", "", "trust anchors for the server (PEM)")
	conns := flag.Int("conns", 16, "connections, one request in flight on each")
	seconds := flag.Float64("seconds", 3, "measured window")
	rate := flag.Float64("rate", 0, "open loop: requests per second in all (0: closed loop)")
	pid := flag.Int("pid", 0, "server process whose CPU to read")
	flag.Parse()

	bodies := readBodies(*bodiesFile)
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail(fmt.Errorf("no certificate in %s", *caFile))
		}
		tlsConf.RootCAs = pool
	}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		tlsConf.Certificates = []tls.Certificate{pair}
	}

	var errors int64
	var firstError atomic.Value
	var next int64
	do := func(c *http.Client) bool {
		body := bodies[int(atomic.AddInt64(&next, 1))%len(bodies)]
		req, err := http.NewRequest(*method, *url, bytes.NewReader(body))
		if err != nil {
			fail(err)
		}
		if body != nil {
			req.Header.Set("content-type", "application/json")
		}
		res, err := c.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err == nil && res.StatusCode != 200 {
				err = fmt.Errorf("status %d", res.StatusCode)
			}
		}
		if err != nil {
			atomic.AddInt64(&errors, 1)
			firstError.CompareAndSwap(nil, err.Error())
			return false
		}
		return true
	}

	clients := make([]*http.Client, *conns)
	var warm sync.WaitGroup
	for i := range clients {
		clients[i] = &http.Client{Transport: &http.Transport{
			TLSClientConfig: tlsConf.Clone(), MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute,
			ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		}, Timeout: 60 * time.Second}
		warm.Add(1)
		go func(c *http.Client) { defer warm.Done(); do(c) }(clients[i])
		if i%64 == 63 {
			warm.Wait() // handshakes in waves, so that warm-up itself does not time out
		}
	}
	warm.Wait()
	atomic.StoreInt64(&errors, 0)
	firstError = atomic.Value{}

	perConn := make([]int64, *conns)
	lat := make([][]float64, *conns)
	cpu0, sys0 := cpuSeconds(*pid)
	start := time.Now()
	end := start.Add(time.Duration(*seconds * float64(time.Second)))
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			interval := time.Duration(0)
			due := start
			if *rate > 0 {
				interval = time.Duration(float64(*conns) / *rate * float64(time.Second))
				due = start.Add(interval * time.Duration(i) / time.Duration(*conns))
			}
			for {
				if interval > 0 {
					if due.After(end) {
						return
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				} else if time.Now().After(end) {
					return
				}
				t := time.Now()
				if interval > 0 {
					t = due
					due = due.Add(interval)
				}
				if do(clients[i]) {
					lat[i] = append(lat[i], float64(time.Since(t).Microseconds())/1000)
					perConn[i]++
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu1, sys1 := cpuSeconds(*pid)

	var all []float64
	r := result{Seconds: elapsed, CPUSeconds: cpu1 - cpu0, SysCPUSeconds: sys1 - sys0, Errors: errors, Conns: *conns, MinPerConn: -1}
	for i, l := range lat {
		all = append(all, l...)
		if r.MinPerConn < 0 || perConn[i] < r.MinPerConn {
			r.MinPerConn = perConn[i]
		}
		if perConn[i] > r.MaxPerConn {
			r.MaxPerConn = perConn[i]
		}
	}
	if v, ok := firstError.Load().(string); ok {
		r.FirstError = v
	}
	sort.Float64s(all)
	r.Ops = int64(len(all))
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p/100*float64(len(all))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(all) {
			i = len(all) - 1
		}
		return all[i]
	}
	r.P50Ms, r.P99Ms, r.MaxMs = pct(50), pct(99), pct(100)
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
