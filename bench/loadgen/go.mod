module voicebot/bench/loadgen

go 1.19
