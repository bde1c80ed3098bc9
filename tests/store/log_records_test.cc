#include "store/log_records.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "gtest/gtest.h"

namespace offerd {
namespace {

using nlohmann::json;

DecisionRecord SampleDecision() {
  DecisionRecord record;
  record.decision_id = "0123456789abcdef0123456789abcdef";
  record.ts_ms = 1795417200123;
  record.user_id = "u-42";
  record.arm = "high_explore";
  record.holdout = false;
  record.snapshot_version = "20261123T070000Z";
  record.canary = true;
  record.degraded = false;
  record.context = {"app", "ios", "home", "DE"};
  OfferLogRecord first;
  first.offer_id = "o-1";
  first.rank = 1;
  first.score = 1.25;
  first.propensity = 0.95;
  first.explored = false;
  first.p_treated = 0.12;
  first.p_control = 0.03;
  first.uplift = 0.09;
  first.clv = 183.5;
  first.expected_value = 1.3;
  first.fatigue_multiplier = 0.9615;
  first.segment = Segment::kPersuadable;
  OfferLogRecord second = first;
  second.offer_id = "o-7";
  second.rank = 2;
  second.propensity = 0.0125;
  second.explored = true;
  second.uplift = -0.02;
  second.segment = Segment::kSleepingDog;
  record.offers = {first, second};
  return record;
}

TEST(LogRecordsTest, DecisionLineRoundTrips) {
  const DecisionRecord record = SampleDecision();
  const std::string line = ToJsonLine(record);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json doc = json::parse(line);
  EXPECT_EQ(doc["type"], "decision");
  EXPECT_EQ(doc["decision_id"], "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(doc["ts_ms"].get<int64_t>(), 1795417200123);
  EXPECT_EQ(doc["user_id"], "u-42");
  EXPECT_EQ(doc["arm"], "high_explore");
  EXPECT_EQ(doc["holdout"], false);
  EXPECT_EQ(doc["snapshot_version"], "20261123T070000Z");
  EXPECT_EQ(doc["canary"], true);
  EXPECT_EQ(doc["degraded"], false);
  EXPECT_EQ(doc["context"],
            (json{{"channel", "app"}, {"device", "ios"}, {"page", "home"}, {"country", "DE"}}));
  ASSERT_EQ(doc["offers"].size(), 2u);
  const json& o = doc["offers"][1];
  EXPECT_EQ(o["offer_id"], "o-7");
  EXPECT_EQ(o["rank"], 2);
  EXPECT_EQ(o["score"].get<double>(), 1.25);
  EXPECT_EQ(o["propensity"].get<double>(), 0.0125);
  EXPECT_EQ(o["explored"], true);
  EXPECT_EQ(o["p_treated"].get<double>(), 0.12);
  EXPECT_EQ(o["p_control"].get<double>(), 0.03);
  EXPECT_EQ(o["uplift"].get<double>(), -0.02);
  EXPECT_EQ(o["clv"].get<double>(), 183.5);
  EXPECT_EQ(o["expected_value"].get<double>(), 1.3);
  EXPECT_EQ(o["fatigue_multiplier"].get<double>(), 0.9615);
  EXPECT_EQ(o["segment"], "sleeping_dog");
  EXPECT_EQ(doc["offers"][0]["segment"], "persuadable");
  // Every documented key, nothing else.
  EXPECT_EQ(doc.size(), 11u);
  EXPECT_EQ(o.size(), 12u);
}

// The exact text is part of the contract with the offline reader: the same lines are read by
// tests/offline/test_logs_report.py (CPP_DECISION_LINE, CPP_EVENT_LINE).
TEST(LogRecordsTest, DecisionLineHasTheDocumentedText) {
  EXPECT_EQ(
      ToJsonLine(SampleDecision()),
      R"({"type":"decision","decision_id":"0123456789abcdef0123456789abcdef",)"
      R"("ts_ms":1795417200123,"user_id":"u-42","arm":"high_explore","holdout":false,)"
      R"("snapshot_version":"20261123T070000Z","canary":true,"degraded":false,)"
      R"("context":{"channel":"app","device":"ios","page":"home","country":"DE"},)"
      R"("offers":[{"offer_id":"o-1","rank":1,"score":1.25,"propensity":0.95,"explored":false,)"
      R"("p_treated":0.12,"p_control":0.03,"uplift":0.09,"clv":183.5,"expected_value":1.3,)"
      R"("fatigue_multiplier":0.9615,"segment":"persuadable"},{"offer_id":"o-7","rank":2,)"
      R"("score":1.25,"propensity":0.0125,"explored":true,"p_treated":0.12,"p_control":0.03,)"
      R"("uplift":-0.02,"clv":183.5,"expected_value":1.3,"fatigue_multiplier":0.9615,)"
      R"("segment":"sleeping_dog"}]})");
}

TEST(LogRecordsTest, EventLineHasTheDocumentedText) {
  EventRecord record;
  record.ts_ms = 1795417201000;
  record.received_ms = 1795417201050;
  record.user_id = "u-42";
  record.offer_id = "o-1";
  record.event_type = EventKind::kRedeem;
  record.decision_id = "0123456789abcdef0123456789abcdef";
  EXPECT_EQ(
      ToJsonLine(record),
      R"({"type":"event","ts_ms":1795417201000,"received_ms":1795417201050,"user_id":"u-42",)"
      R"("offer_id":"o-1","event_type":"REDEEM","decision_id":"0123456789abcdef0123456789abcdef",)"
      R"("amount":0})");
}

TEST(LogRecordsTest, HoldoutDecisionHasAnEmptyOfferList) {
  DecisionRecord record = SampleDecision();
  record.holdout = true;
  record.offers.clear();
  const json doc = json::parse(ToJsonLine(record));
  EXPECT_EQ(doc["holdout"], true);
  EXPECT_TRUE(doc["offers"].is_array());
  EXPECT_TRUE(doc["offers"].empty());
}

TEST(LogRecordsTest, EventLineRoundTripsForEveryType) {
  const EventKind kinds[] = {EventKind::kImpression, EventKind::kClick, EventKind::kRedeem,
                             EventKind::kDismiss, EventKind::kPurchase};
  const char* names[] = {"IMPRESSION", "CLICK", "REDEEM", "DISMISS", "PURCHASE"};
  for (int k = 0; k < 5; ++k) {
    EventRecord record;
    record.ts_ms = 1795417201000;
    record.received_ms = 1795417201050;
    record.user_id = "u-42";
    record.offer_id = kinds[k] == EventKind::kPurchase ? "" : "o-1";
    record.event_type = kinds[k];
    record.decision_id = "0123456789abcdef0123456789abcdef";
    record.amount = kinds[k] == EventKind::kPurchase ? 59.99 : 0.0;
    const std::string line = ToJsonLine(record);
    const json doc = json::parse(line);
    EXPECT_EQ(doc["type"], "event");
    EXPECT_EQ(doc["ts_ms"].get<int64_t>(), 1795417201000);
    EXPECT_EQ(doc["received_ms"].get<int64_t>(), 1795417201050);
    EXPECT_EQ(doc["user_id"], "u-42");
    EXPECT_EQ(doc["offer_id"], kinds[k] == EventKind::kPurchase ? "" : "o-1");
    EXPECT_EQ(doc["event_type"], names[k]);
    EXPECT_EQ(doc["decision_id"], "0123456789abcdef0123456789abcdef");
    EXPECT_EQ(doc["amount"].get<double>(), kinds[k] == EventKind::kPurchase ? 59.99 : 0.0);
    EXPECT_EQ(doc.size(), 8u);
  }
}

TEST(LogRecordsTest, StringsAreEscaped) {
  EventRecord record;
  const std::string nasty = std::string("q\"b\\s/n\nr\rt\tb\bf\fnul") + '\0' + "\x01\x1f" + "\x7f" +
                            "caf\xc3\xa9 \xf0\x9f\x8e\x81";
  record.user_id = nasty;
  const std::string line = ToJsonLine(record);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_NE(line.find("\\u0000"), std::string::npos);
  EXPECT_NE(line.find("\\u001f"), std::string::npos);
  EXPECT_EQ(json::parse(line)["user_id"].get<std::string>(), nasty);
}

TEST(LogRecordsTest, InvalidUtf8BecomesReplacementCharacters) {
  EventRecord record;
  // Stray continuation byte, truncated 2-byte sequence, overlong '/', a UTF-16 surrogate,
  // a byte never valid in UTF-8, and a truncated 4-byte sequence at the end.
  const std::string bad =
      std::string("a\x80") + "b\xc3" + "c\xc0\xaf" + "d\xed\xa0\x80" + "e\xff" + "f\xf0\x9f\x8e";
  record.offer_id = bad;
  const std::string line = ToJsonLine(record);
  const std::string parsed = json::parse(line)["offer_id"].get<std::string>();
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(parsed, "a" + fffd + "b" + fffd + "c" + fffd + fffd + "d" + fffd + fffd + fffd + "e" +
                        fffd + "f" + fffd + fffd + fffd);
}

TEST(LogRecordsTest, NonFiniteNumbersAreNullAndFiniteOnesRoundTrip) {
  DecisionRecord record = SampleDecision();
  record.offers[0].score = std::numeric_limits<double>::quiet_NaN();
  record.offers[0].clv = std::numeric_limits<double>::infinity();
  record.offers[0].uplift = -std::numeric_limits<double>::infinity();
  const double finite[] = {0.1,  1e-300,    123456.789, 5e-324, 1.7976931348623157e308,
                           -0.0, 1.0 / 3.0, 42.0};
  for (double value : finite) {
    record.offers[1].expected_value = value;
    const json doc = json::parse(ToJsonLine(record));
    const json& bad = doc["offers"][0];
    EXPECT_TRUE(bad["score"].is_null());
    EXPECT_TRUE(bad["clv"].is_null());
    EXPECT_TRUE(bad["uplift"].is_null());
    const double back = doc["offers"][1]["expected_value"].get<double>();
    EXPECT_EQ(back, value);
  }
  EventRecord event;
  event.amount = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(json::parse(ToJsonLine(event))["amount"].is_null());
}

TEST(LogRecordsTest, AppendReusesTheCallersBuffer) {
  std::string buffer = "prefix:";
  EventRecord record;
  record.user_id = "u";
  AppendJsonLine(record, &buffer);
  EXPECT_EQ(buffer.rfind("prefix:{\"type\":\"event\",", 0), 0u);
  EXPECT_EQ(buffer.substr(7), ToJsonLine(record));
}

}  // namespace
}  // namespace offerd
