#!/usr/bin/env bash
# Apache Kafka (a single-node KRaft broker) from Maven Central's jars, run with the machine's Java (17+): for the
# tests and the demo's Kafka pipeline (collector/examples/kafka-pipeline.yaml), on loopback.
#
#   scripts/kafka.sh classpath                  # fetch the jars once (cached), print the classpath
#   scripts/kafka.sh serve DIR PORT CPORT       # format DIR (once) and run the broker in the foreground:
#                                               #   clients on 127.0.0.1:PORT, the KRaft controller on CPORT
#   scripts/kafka.sh topic PORT NAME PARTITIONS # create a topic (no error if it exists)
#   scripts/kafka.sh offsets PORT GROUP         # a consumer group's committed offsets, log-end offsets and lag
#                                               #   per partition (kafka-consumer-groups --describe)
#
# The jars are org.apache.kafka:kafka_2.13 (the broker) and kafka-tools (the topic command) with their runtime
# dependencies, copied by `mvn dependency:copy-dependencies` into
# ${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/otel-mlmon}/kafka-$KAFKA_VERSION/lib; a rerun prints the classpath
# at once. KAFKA_VERSION overrides the version (default below).
set -euo pipefail

version="${KAFKA_VERSION:-4.1.1}"
cache="${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-mlmon}/kafka-$version"
lib="$cache/lib"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "kafka.sh: $1 is needed ($2)" >&2; exit 1; }
}

fetch() {
  [ -f "$lib/.complete" ] && return 0
  need java "Java 17 or newer: Debian's openjdk-17-jre-headless"
  need mvn "Maven: Debian's maven"
  echo "kafka.sh: fetching Apache Kafka $version from Maven Central (once)" >&2
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/kafka-fetch.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>otel-mlmon</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$lib.tmp"
  (cd "$work" && mvn -B -q -Dstyle.color=never -f pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$lib.tmp" >&2)
  cat >"$lib.tmp/log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger:
      - {name: kafka.server.KafkaRaftServer, level: INFO}
      - {name: kafka.server.BrokerServer, level: INFO}
EOF
  touch "$lib.tmp/.complete"
  rm -rf "$lib" && mv "$lib.tmp" "$lib"
}

classpath() {
  local jars=("$lib"/*.jar)
  local IFS=:
  echo "$lib:${jars[*]}"
}

java_opts=(-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
           -Dlog4j2.configurationFile="$lib/log4j2.yaml" -Djava.awt.headless=true)

case "${1:-}" in
  classpath)
    fetch
    classpath
    ;;
  serve)
    [ $# -eq 4 ] || { echo "usage: $0 serve DIR PORT CONTROLLER_PORT" >&2; exit 2; }
    dir="$2" port="$3" cport="$4"
    fetch
    cp="$(classpath)"
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Kafka's default: a new group's first rebalance waits 3 s for more members, so processor replicas started
# together split the partitions from the start (with 0 the first to join takes all of them and reads some
# models' messages before the others join: those models' state would be split between two processors).
group.initial.rebalance.delay.ms=3000
auto.create.topics.enable=false
EOF
    if [ ! -f "$dir/data/meta.properties" ]; then
      # A cluster id as `kafka-storage random-uuid` makes it (16 random bytes, base64url, not starting with a
      # dash), without starting a JVM for it.
      id="-"
      while [ "${id#-}" != "$id" ]; do id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"; done
      java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format --cluster-id "$id" \
        --config "$dir/server.properties" >&2
    fi
    exec java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties"
    ;;
  topic)
    [ $# -eq 4 ] || { echo "usage: $0 topic PORT NAME PARTITIONS" >&2; exit 2; }
    fetch
    exec java "${java_opts[@]}" -cp "$(classpath)" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "127.0.0.1:$2" --create --if-not-exists --topic "$3" --partitions "$4" \
      --replication-factor 1
    ;;
  offsets)
    [ $# -eq 3 ] || { echo "usage: $0 offsets PORT GROUP" >&2; exit 2; }
    fetch
    exec java "${java_opts[@]}" -cp "$(classpath)" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
      --bootstrap-server "127.0.0.1:$2" --describe --group "$3"
    ;;
  *)
    echo "usage: $0 classpath | serve DIR PORT CONTROLLER_PORT | topic PORT NAME PARTITIONS | offsets PORT GROUP" >&2
    exit 2
    ;;
esac
