package main

// completions plays an OpenAI-compatible front end (Vapi, Pipecat...): concurrent calls of streamed
// turns to voicebot's /openai/v1/chat/completions, each request carrying the whole conversation, with the
// model in the same process. Per turn it times the first text delta beside the moment the model's first
// words left it (one clock), which is the "first delta beyond the model's first token".

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type completionTurn struct {
	firstDelta, beyond time.Duration
	hasBeyond          bool
	ok, crossed        bool
}

func runCompletions(args []string) {
	fs := flag.NewFlagSet("completions", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:8000", "the server")
	modelPort := fs.Int("model-port", 9000, "where the fake model listens")
	modelLatency := fs.Float64("model-latency", 0.3, "seconds to the model's first words")
	sentences := fs.Int("sentences", 3, "sentences per reply")
	gap := fs.Float64("sentence-gap", 0.3, "seconds between sentences")
	calls := fs.Int("calls", 200, "concurrent calls")
	turns := fs.Int("turns", 4, "turns per call")
	think := fs.Float64("think", 1, "seconds between a reply and the next request")
	ramp := fs.Float64("ramp", 5, "seconds over which the calls start")
	token := fs.String("token", os.Getenv("COMPLETIONS_TOKEN"), "bearer token")
	run := fs.String("run", fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff), "keeps call ids apart")
	fs.Parse(args)

	left := sync.Map{} // marker -> when the model's first words left it
	model := &fakeModel{latency: seconds(*modelLatency), sentences: *sentences, gap: seconds(*gap),
		firstSentence: func(m string, at time.Time) { left.Store(m, at) }}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *modelPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen completions:", err)
		os.Exit(1)
	}
	go http.Serve(listener, model)

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *calls + 16,
		MaxIdleConns: *calls + 16, DisableCompression: true}}
	results := make(chan completionTurn, *calls**turns)
	cpuBefore := cpuSeconds()
	started := time.Now()
	eachCall(*calls, *ramp, func(c int) {
		id := fmt.Sprintf("lgc-%s-%d", *run, c)
		prefix := fmt.Sprintf("mk%sx%dx", *run, c)
		messages := []map[string]string{}
		for t := 0; t < *turns; t++ {
			time.Sleep(seconds(*think))
			mine := fmt.Sprintf("%s%d", prefix, t)
			messages = append(messages, map[string]string{"role": "user", "content": "Caller turn " + mine + ", please."})
			data, _ := json.Marshal(map[string]interface{}{"model": "voicebot", "stream": true, "messages": messages})
			req, _ := http.NewRequest("POST", *url+"/openai/v1/chat/completions", bytes.NewReader(data))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Call-Id", id)
			if *token != "" {
				req.Header.Set("Authorization", "Bearer "+*token)
			}
			asked := time.Now()
			resp, err := client.Do(req)
			turn := completionTurn{}
			var text strings.Builder
			if err == nil {
				reader := bufio.NewReader(resp.Body)
				for {
					line, err := reader.ReadString('\n')
					if strings.HasPrefix(line, "data: {") {
						var chunk struct {
							Choices []struct {
								Delta struct {
									Content string `json:"content"`
								} `json:"delta"`
							} `json:"choices"`
						}
						json.Unmarshal([]byte(line[6:]), &chunk)
						for _, choice := range chunk.Choices {
							if choice.Delta.Content != "" && text.Len() == 0 {
								arrived := time.Now()
								turn.firstDelta = arrived.Sub(asked)
								if at, found := left.Load(mine); found {
									turn.beyond, turn.hasBeyond = arrived.Sub(at.(time.Time)), true
								}
							}
							text.WriteString(choice.Delta.Content)
						}
					}
					if strings.HasPrefix(line, "data: [DONE]") {
						turn.ok = resp.StatusCode == 200
						break
					}
					if err != nil {
						break
					}
				}
				resp.Body.Close()
			}
			reply := text.String()
			turn.crossed = turn.ok && crossed(reply, mine, prefix)
			results <- turn
			messages = append(messages, map[string]string{"role": "assistant", "content": reply})
		}
	})
	elapsed := time.Since(started).Seconds()
	close(results)
	var first, beyond []float64
	ok, mixed, missing := 0, 0, 0
	for r := range results {
		if !r.ok {
			continue
		}
		ok++
		if r.crossed {
			mixed++
		}
		first = append(first, float64(r.firstDelta.Microseconds())/1000)
		if r.hasBeyond {
			beyond = append(beyond, float64(r.beyond.Microseconds())/1000)
		} else {
			missing++
		}
	}
	sort.Float64s(first)
	sort.Float64s(beyond)
	stats := func(v []float64) map[string]float64 {
		return map[string]float64{"p50": percentile(v, 50), "p90": percentile(v, 90), "p99": percentile(v, 99),
			"max": percentile(v, 100)}
	}
	out, _ := json.Marshal(map[string]interface{}{
		"calls": *calls, "turns": *calls * *turns, "ok": ok, "crossed": mixed, "untimed": missing,
		"seconds": elapsed, "turns_per_s": float64(ok) / elapsed, "first_delta_ms": stats(first),
		"first_delta_beyond_model_ms": stats(beyond), "generator_cpu_s": cpuSeconds() - cpuBefore,
	})
	fmt.Println(string(out))
}
