# Sourced by scripts that measure the collector: its CPU ticks (utime+stime, CLK_TCK a
# second) per thread name, one "name ticks" line each, summed over threads of one name.
ticks_by_thread() {
    for task in /proc/"$1"/task/*; do
        echo "$(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
    done | awk '{ticks[$1] += $2} END {for (name in ticks) print name, ticks[name]}' | sort
}
