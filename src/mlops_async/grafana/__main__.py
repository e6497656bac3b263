"""``python -m mlops_async.grafana``: print the Grafana dashboard JSON."""

import sys

from . import dashboard_json

sys.stdout.write(dashboard_json())
