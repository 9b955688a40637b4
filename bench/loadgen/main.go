// loadgen: the load generator, the fake model and the article's Go handler for voicebot's benchmarks.
//
// Compiled, so that the load and the model take little of the cores they share
// with the server being measured (bench/knee.py reports how much they used).
//
//	go build -o /tmp/loadgen ./bench/loadgen
//	loadgen model -port 9000 -latency 0.7         # a strict Messages API (POST /v1/messages)
//	loadgen article -port 8080                    # the article's handler, its callLLM asking that model
//	loadgen drive -url http://127.0.0.1:8000 -calls 300 -turns 6 -think 2 -ramp 5 -model-latency 0.7
//
// drive speaks the article's contract (call-started, transcripts, call.ended),
// one kept-alive connection per call, and prints one JSON line: turns, errors,
// shed turns, crossed histories, latency and latency beyond the model.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

var marker = regexp.MustCompile(`\bmk[0-9A-Za-z]+\b`)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen model|article|drive [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "model":
		runModel(os.Args[2:])
	case "article":
		runArticle(os.Args[2:])
	case "drive":
		runDrive(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// ---- the fake model ------------------------------------------------------------------------

type apiMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type apiRequest struct {
	Model     string          `json:"model"`
	MaxTokens int             `json:"max_tokens"`
	System    json.RawMessage `json:"system"`
	Messages  []apiMessage    `json:"messages"`
	Stream    bool            `json:"stream"`
}

func textOf(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var blocks []map[string]interface{}
	if json.Unmarshal(raw, &blocks) != nil || len(blocks) == 0 {
		return "", false
	}
	var parts []string
	for _, b := range blocks {
		if b["type"] == "text" {
			t, _ := b["text"].(string)
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, " "), true
}

func apiError(w http.ResponseWriter, status int, kind, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]interface{}{"type": "error",
		"error": map[string]string{"type": kind, "message": message}})
}

func runModel(args []string) {
	fs := flag.NewFlagSet("model", flag.ExitOnError)
	port := fs.Int("port", 9000, "port on 127.0.0.1")
	latency := fs.Float64("latency", 0.7, "seconds before the answer")
	fs.Parse(args)
	wait := time.Duration(*latency * float64(time.Second))
	http.HandleFunc("/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			apiError(w, 405, "invalid_request_error", "POST only")
			return
		}
		if r.Header.Get("x-api-key") == "" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			apiError(w, 401, "authentication_error", "no API key")
			return
		}
		if r.Header.Get("anthropic-version") == "" {
			apiError(w, 400, "invalid_request_error", "anthropic-version header is required")
			return
		}
		var req apiRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			apiError(w, 400, "invalid_request_error", "body is not JSON")
			return
		}
		if req.Model == "" || req.MaxTokens < 1 || len(req.Messages) == 0 {
			apiError(w, 400, "invalid_request_error", "model, max_tokens and messages are required")
			return
		}
		var said []string
		for i, m := range req.Messages {
			want := "user"
			if i%2 == 1 {
				want = "assistant"
			}
			text, ok := textOf(m.Content)
			if m.Role != want || !ok {
				apiError(w, 400, "invalid_request_error", fmt.Sprintf("messages.%d: roles must alternate from user, content non-empty", i))
				return
			}
			if m.Role == "user" {
				said = append(said, marker.FindAllString(text, -1)...)
			}
		}
		if req.Messages[len(req.Messages)-1].Role != "user" {
			apiError(w, 400, "invalid_request_error", "the last message must be the user's")
			return
		}
		time.Sleep(wait)
		// Newest first: a server that cuts a long reply short keeps the words of this turn.
		for i, j := 0, len(said)-1; i < j; i, j = i+1, j-1 {
			said[i], said[j] = said[j], said[i]
		}
		text := "Heard " + strings.Join(said, " ") + "."
		usage := map[string]int{"input_tokens": 20 * len(req.Messages), "output_tokens": 2 + len(said)}
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			events := []map[string]interface{}{
				{"type": "message_start", "message": map[string]interface{}{"id": "msg_fake", "type": "message",
					"role": "assistant", "model": req.Model, "content": []int{}, "usage": usage}},
				{"type": "content_block_start", "index": 0, "content_block": map[string]string{"type": "text", "text": ""}},
				{"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "text_delta", "text": text}},
				{"type": "content_block_stop", "index": 0},
				{"type": "message_delta", "delta": map[string]string{"stop_reason": "end_turn"}, "usage": map[string]int{"output_tokens": usage["output_tokens"]}},
				{"type": "message_stop"},
			}
			for _, e := range events {
				data, _ := json.Marshal(e)
				fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e["type"], data)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]interface{}{"id": "msg_fake", "type": "message", "role": "assistant",
			"model": req.Model, "content": []map[string]string{{"type": "text", "text": text}},
			"stop_reason": "end_turn", "usage": usage})
	})
	log.Fatal(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), nil))
}

// ---- the article's handler, its callLLM asking the model -------------------------------------

type callSession struct {
	messages []map[string]string
	mu       sync.Mutex
}

func runArticle(args []string) {
	fs := flag.NewFlagSet("article", flag.ExitOnError)
	port := fs.Int("port", 8080, "port on 127.0.0.1")
	fs.Parse(args)
	base := strings.TrimRight(os.Getenv("ANTHROPIC_BASE_URL"), "/")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4096}, Timeout: 15 * time.Second}
	var sessions sync.Map
	get := func(id string) *callSession {
		s, _ := sessions.LoadOrStore(id, &callSession{})
		return s.(*callSession)
	}
	callLLM := func(messages []map[string]string) string {
		body, _ := json.Marshal(map[string]interface{}{"model": "claude-haiku-5-5", "max_tokens": 300,
			"system":   "You are a helpful support agent. Keep responses brief, under 2 sentences, for voice delivery.",
			"messages": messages})
		req, _ := http.NewRequest("POST", base+"/v1/messages", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-api-key", os.Getenv("ANTHROPIC_API_KEY"))
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := client.Do(req)
		if err != nil {
			return "Sorry, something went wrong."
		}
		defer resp.Body.Close()
		var answer struct {
			Content []struct{ Type, Text string } `json:"content"`
		}
		json.NewDecoder(resp.Body).Decode(&answer)
		var text []string
		for _, b := range answer.Content {
			if b.Type == "text" {
				text = append(text, b.Text)
			}
		}
		return strings.Join(text, "")
	}
	type event struct {
		Type, CallID, CallerNum, Transcript string
	}
	decode := func(r *http.Request) (event, error) {
		var raw struct {
			Type       string `json:"type"`
			CallID     string `json:"call_id"`
			CallerNum  string `json:"caller_num"`
			Transcript string `json:"transcript"`
		}
		err := json.NewDecoder(r.Body).Decode(&raw)
		return event{raw.Type, raw.CallID, raw.CallerNum, raw.Transcript}, err
	}
	http.HandleFunc("/webhook/call-started", func(w http.ResponseWriter, r *http.Request) {
		e, _ := decode(r)
		get(e.CallID)
		json.NewEncoder(w).Encode(map[string]string{"greeting": "Hello! How can I help you today?"})
	})
	http.HandleFunc("/webhook/transcript", func(w http.ResponseWriter, r *http.Request) {
		e, err := decode(r)
		if err != nil {
			http.Error(w, "invalid payload", http.StatusBadRequest)
			return
		}
		if e.Type == "call.ended" {
			sessions.Delete(e.CallID)
			w.WriteHeader(http.StatusOK)
			return
		}
		s := get(e.CallID)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.messages = append(s.messages, map[string]string{"role": "user", "content": e.Transcript})
		reply := callLLM(s.messages)
		s.messages = append(s.messages, map[string]string{"role": "assistant", "content": reply})
		json.NewEncoder(w).Encode(map[string]string{"response": reply})
	})
	http.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"status":"ready"}`)) })
	log.Fatal(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), nil))
}

// ---- the load ------------------------------------------------------------------------------

type result struct {
	latency time.Duration
	status  int
	crossed bool
	turn    int
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return float64(u.Utime.Sec+u.Stime.Sec) + float64(u.Utime.Usec+u.Stime.Usec)/1e6
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
	var wg sync.WaitGroup
	cpuBefore := cpuSeconds()
	started := time.Now()
	for c := 0; c < *calls; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			time.Sleep(time.Duration(float64(c) / float64(*calls) * *ramp * float64(time.Second)))
			id := fmt.Sprintf("lg-%s-%d", *run, c)
			post("/webhook/call-started", map[string]string{"type": "call.started", "call_id": id, "caller_num": "+15550100"})
			prefix := fmt.Sprintf("mk%sx%dx", *run, c)
			for t := 0; t < *turns; t++ {
				time.Sleep(time.Duration(*think * float64(time.Second)))
				mine := fmt.Sprintf("%s%d", prefix, t)
				status, body, took := post("/webhook/transcript",
					map[string]string{"type": "transcript", "call_id": id, "transcript": "Caller turn " + mine + ", please."})
				crossed := false
				if status == 200 {
					var answer struct {
						Response string `json:"response"`
					}
					json.Unmarshal(body, &answer)
					heard := marker.FindAllString(answer.Response, -1)
					// Every word the model heard is this call's, and the first (the newest) is this
					// turn's: a history may be trimmed and a reply cut short, never mixed.
					crossed = len(heard) == 0 || heard[0] != mine
					for _, m := range heard {
						crossed = crossed || !strings.HasPrefix(m, prefix)
					}
				}
				results <- result{took, status, crossed, t}
			}
			post("/webhook/transcript", map[string]string{"type": "call.ended", "call_id": id})
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	close(results)
	var ms []float64
	byTurn := make([][]float64, *turns)
	errors, shed, crossed := 0, 0, 0
	counts := map[int]int{}
	for r := range results {
		counts[r.status]++
		switch {
		case r.status == 200:
			ms = append(ms, float64(r.latency.Microseconds())/1000)
			byTurn[r.turn] = append(byTurn[r.turn], float64(r.latency.Microseconds())/1000-*modelLatency*1000)
			if r.crossed {
				crossed++
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
		"calls": *calls, "turns": *calls * *turns, "ok": len(ms), "errors": errors, "shed": shed, "crossed": crossed,
		"statuses": statuses, "seconds": elapsed, "turns_per_s": float64(len(ms)) / elapsed,
		"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": percentile(ms, 100),
		"beyond_p50_ms": beyond(50), "beyond_p99_ms": beyond(99), "generator_cpu_s": cpuSeconds() - cpuBefore,
		"beyond_p99_ms_by_turn": p99ByTurn,
	})
	fmt.Println(string(out))
}
