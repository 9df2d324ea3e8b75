#!/usr/bin/env bash
# What the test suite needs besides Python packages, installed when missing (part of `make test`):
#  - Debian's chromium (renders the HTML report in a test), prometheus (+ promtool) and prometheus-alertmanager
#    (+ amtool): the real Prometheus and Alertmanager of the integration tests; openssl (the certificates of the
#    processor's TLS tests and of the native stack);
#  - the otel-mlmon Collector, both builds, and Jaeger v2, with Go from the module proxy (collector/build.sh;
#    cached, so a rerun on the same machine takes a second);
#  - helm v3, built from its Go module the same way (scripts/build-helm.sh; the chart's tests in tests/deploy);
#  - Java 17 and Maven (Debian) and Apache Kafka's jars from Maven Central (scripts/kafka.sh: tests/stack/test_kafka.py).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)  # Kafka (tests/stack/test_kafka.py), Spark
command -v mvn >/dev/null 2>&1 || need+=(maven)  # fetches Kafka's jars from Maven Central (scripts/kafka.sh)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || {
    echo "system-deps: install ${need[*]} (Debian/Ubuntu package names); no apt-get here" >&2; exit 1; }
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "system-deps: apt-get install ${need[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # --no-install-recommends: Prometheus' recommended node exporter and friends are not needed.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Downloads (Kafka's jars from Maven Central, the integrations venv's packages from PyPI) run beside the Go builds,
# which keep the CPU busy; each is cached, and a failure of either fails this script (wait returns its status).
scripts/kafka.sh classpath >/dev/null &
kafka=$!
PYTHON="${PYTHON:-python3}" scripts/integrations-venv.sh >/dev/null &
venv=$!
collector/build.sh >/dev/null
collector/build.sh --cloud >/dev/null
collector/build.sh --jaeger >/dev/null
scripts/build-helm.sh >/dev/null  # helm from its Go module (tests/deploy), cached the same way
wait "$kafka"
wait "$venv"
