package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

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
