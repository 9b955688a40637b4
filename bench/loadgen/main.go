// loadgen: the load generators, the fakes and the article's Go handler for voicebot's benchmarks.
//
// Compiled, so that the load and the fakes take little of the cores they share
// with the server being measured (bench/knee.py and bench/first_word.py report how much they used).
//
//	go build -o /tmp/loadgen ./bench/loadgen
//	loadgen model -port 9000 -latency 0.7         # a strict Messages API (POST /v1/messages)
//	loadgen article -port 8080                    # the article's handler, its callLLM asking that model
//	loadgen drive -url http://127.0.0.1:8000 -calls 300 -turns 6 -think 2 -ramp 5 -model-latency 0.7
//	loadgen voipbin -url http://127.0.0.1:8000 -rest-port 9100 -model-port 9000 -calls 200 -turns 4 -think 1
//	loadgen completions -url http://127.0.0.1:8000 -model-port 9000 -calls 200 -turns 4 -think 1
//
// drive speaks the article's contract (call-started, transcripts, call.ended),
// one kept-alive connection per call, and prints one JSON line: turns, errors,
// shed turns, crossed histories, latency and latency beyond the model.
//
// voipbin plays VoIPBin: its REST API (speakings, transcribes) and its signed
// events, with the model in the same process, and prints one JSON line: the
// time to the first word of each reply, beside the model's first sentence, and
// the time to each greeting.
package main

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen model|article|drive|voipbin|completions [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "model":
		runModel(os.Args[2:])
	case "article":
		runArticle(os.Args[2:])
	case "drive":
		runDrive(os.Args[2:])
	case "voipbin":
		runVoipbin(os.Args[2:])
	case "completions":
		runCompletions(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
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

// eachCall runs call(c) for every call at once, their starts spread over the ramp, and waits for all.
func eachCall(calls int, ramp float64, call func(c int)) {
	var wg sync.WaitGroup
	for c := 0; c < calls; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			time.Sleep(time.Duration(float64(c) / float64(calls) * ramp * float64(time.Second)))
			call(c)
		}(c)
	}
	wg.Wait()
}

// crossed: a reply that mixes calls up. Every word the model heard is this call's (prefix), and
// the first (the newest) is this turn's: a history may be trimmed and a reply cut short, never mixed.
func crossed(reply, mine, prefix string) bool {
	heard := marker.FindAllString(reply, -1)
	wrong := len(heard) == 0 || heard[0] != mine
	for _, m := range heard {
		wrong = wrong || !strings.HasPrefix(m, prefix)
	}
	return wrong
}
