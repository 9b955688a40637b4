package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"time"
)

// ---- the load ------------------------------------------------------------------------------

type result struct {
	latency time.Duration
	status  int
	crossed bool
	turn    int
}

func runDrive(args []string) {
	fs := flag.NewFlagSet("drive", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8000", "the server")
	calls := fs.Int("calls", 100, "calls")
	turns := fs.Int("turns", 6, "turns per call")
	think := fs.Float64("think", 2, "seconds between a reply and the next transcript")
	ramp := fs.Float64("ramp", 5, "seconds over which the calls start")
	modelLatency := fs.Float64("model-latency", 0.7, "the fake model's latency, taken off for 'beyond the model'")
	token := fs.String("token", os.Getenv("WEBHOOK_TOKEN"), "bearer token for the webhooks")
	run := fs.String("run", fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff), "a tag that keeps call ids apart between runs")
	timeout := fs.Float64("timeout", 15, "seconds a request may take (the platform's own wait)")
	fs.Parse(args)

	client := &http.Client{Timeout: time.Duration(*timeout * float64(time.Second)),
		Transport: &http.Transport{MaxIdleConnsPerHost: *calls + 16, MaxIdleConns: *calls + 16,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, DisableCompression: true}}
	post := func(path string, body map[string]string) (int, []byte, time.Duration) {
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", *url+path, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		if *token != "" {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		started := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, time.Since(started)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, answer, time.Since(started)
	}

	results := make(chan result, *calls**turns)
	cpuBefore := cpuSeconds()
	started := time.Now()
	eachCall(*calls, *ramp, func(c int) {
		id := fmt.Sprintf("lg-%s-%d", *run, c)
		post("/webhook/call-started", map[string]string{"type": "call.started", "call_id": id, "caller_num": "+15550100"})
		prefix := fmt.Sprintf("mk%sx%dx", *run, c)
		for t := 0; t < *turns; t++ {
			time.Sleep(time.Duration(*think * float64(time.Second)))
			mine := fmt.Sprintf("%s%d", prefix, t)
			status, body, took := post("/webhook/transcript",
				map[string]string{"type": "transcript", "call_id": id, "transcript": "Caller turn " + mine + ", please."})
			mixed := false
			if status == 200 {
				var answer struct {
					Response string `json:"response"`
				}
				json.Unmarshal(body, &answer)
				mixed = crossed(answer.Response, mine, prefix)
			}
			results <- result{took, status, mixed, t}
		}
		post("/webhook/transcript", map[string]string{"type": "call.ended", "call_id": id})
	})
	elapsed := time.Since(started).Seconds()
	close(results)
	var ms []float64
	byTurn := make([][]float64, *turns)
	errors, shed, mixedUp := 0, 0, 0
	counts := map[int]int{}
	for r := range results {
		counts[r.status]++
		switch {
		case r.status == 200:
			ms = append(ms, float64(r.latency.Microseconds())/1000)
			byTurn[r.turn] = append(byTurn[r.turn], float64(r.latency.Microseconds())/1000-*modelLatency*1000)
			if r.crossed {
				mixedUp++
			}
		case r.status == 503 || r.status == 429:
			shed++
		default:
			errors++
		}
	}
	sort.Float64s(ms)
	beyond := func(p float64) float64 { return percentile(ms, p) - *modelLatency*1000 }
	// Where the tail is: the first turns meet the calls still starting, the last the calls ending.
	p99ByTurn := make([]float64, *turns)
	for i, values := range byTurn {
		sort.Float64s(values)
		p99ByTurn[i] = percentile(values, 99)
	}
	statuses := map[string]int{}
	for k, v := range counts {
		statuses[fmt.Sprint(k)] = v
	}
	out, _ := json.Marshal(map[string]interface{}{
		"calls": *calls, "turns": *calls * *turns, "ok": len(ms), "errors": errors, "shed": shed, "crossed": mixedUp,
		"statuses": statuses, "seconds": elapsed, "turns_per_s": float64(len(ms)) / elapsed,
		"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": percentile(ms, 100),
		"beyond_p50_ms": beyond(50), "beyond_p99_ms": beyond(99), "generator_cpu_s": cpuSeconds() - cpuBefore,
		"beyond_p99_ms_by_turn": p99ByTurn,
	})
	fmt.Println(string(out))
}
