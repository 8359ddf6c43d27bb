"""The fast tier stays fast: ``make test-fast`` (``-m "not slow ..."``) names any test that took over
``FAST_LIMIT_S`` without the ``slow`` marker, so that the next slow test is marked where it is written.
A report, not a failure: timing goals live in benchmark scripts, never in timed tests."""

FAST_LIMIT_S = 5.0


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    markexpr = config.getoption("markexpr", "") or ""
    if "not slow" not in markexpr:
        return
    slow = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "call" and getattr(report, "duration", 0) > FAST_LIMIT_S:
                slow.append((report.duration, report.nodeid))
    if slow:
        terminalreporter.section("tests over the fast tier's limit")
        for duration, nodeid in sorted(slow, reverse=True):
            terminalreporter.write_line(f"{duration:5.1f}s {nodeid}: mark it @pytest.mark.slow")
