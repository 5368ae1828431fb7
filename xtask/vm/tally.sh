#!/bin/busybox sh
# The tally of a `cargo xtask vmtest` guest: tally.sh LIST DIR, where LIST has one
# "NAME EXE ARGS..." line per test binary and DIR holds, per NAME, out.NAME (libtest's output),
# rc.NAME (its exit status) and skips.NAME ("test: reason" lines from memstall_tests::skip).
# A test that skipped counts as skipped, never as passed. The last line is the marker the host
# parses:
#   MEMSTALL-VMTEST-RESULT: passed=N skipped=S failed=M exit=E
list=$1
dir=$2
passed=0
skipped=0
failed=0
exit_status=0
while read -r name exe args; do
	[ -n "$name" ] || continue
	out="$dir/out.$name"
	rc=$(cat "$dir/rc.$name" 2>/dev/null || echo 125)
	[ "$rc" = 0 ] || exit_status=$rc
	touch "$dir/skips.$name"
	if grep -q '^test result:' "$out" 2>/dev/null; then
		# Per-test lines: "test NAME ... ok"; a skipped test's line says ok too.
		p=$(grep -c '^test .* \.\.\. ok$' "$out")
		f=$(grep -c '^test .* \.\.\. FAILED$' "$out")
		s=0
		seen=" "
		while IFS= read -r skip; do
			test_name=${skip%%: *}
			# One count per test, however many reasons it gave.
			case "$seen" in *" $test_name "*) continue ;; esac
			seen="$seen$test_name "
			if grep -qxF "test $test_name ... ok" "$out"; then
				s=$((s + 1))
				echo "vmtest: skipped $name: $skip"
			fi
		done <"$dir/skips.$name"
		p=$((p - s))
	else
		p=0
		s=0
		f=1
	fi
	passed=$((passed + p))
	skipped=$((skipped + s))
	failed=$((failed + f))
	echo "vmtest: $name: $p passed, $s skipped, $f failed, exit $rc"
	if [ "$f" != 0 ]; then
		# Repeat the panics of failing tests here so the tail of the log shows them.
		sed -n '/^failures:$/,/^test result:/p' "$out"
		grep '^test .* FAILED$' "$out" | sed "s/^/vmtest: $name: /"
	fi
done <"$list"
echo "MEMSTALL-VMTEST-RESULT: passed=$passed skipped=$skipped failed=$failed exit=$exit_status"
