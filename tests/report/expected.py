"""What every report must show, stated once for the HTML and the browser tests."""

SECTIONS = ["overview", "privacy", "decay", "return", "segments", "plan", "drilldown", "notes"]
FIGURES = [
    "events-by-day",
    "decay-curves",
    "half-life-distribution",
    "return-curve",
    "return-calibration",
    "segment-sizes",
    "segment-flows",
    "plan-by-action",
    "user-interest",
]
CAMPAIGN_FIGURES = ["qini-curves", "uplift-curves"]
