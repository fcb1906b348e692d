// The path MTU search's arithmetic (loader/pmtu/path_mtu.h), run against a simulated path: which
// sizes each round sends, how many rounds it takes, that it always ends, and that a figure below
// 1280 bytes is never reported.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <functional>
#include <set>

#include "pmtu/path_mtu.h"

namespace uplinkd::pmtu {
namespace {

// A target behind a path: sizes up to `path_mtu` come back unless `lost(size, round)`.
struct Simulated {
  int lo = 0;
  int rounds = 0;
  size_t largest_round = 0;
};

Simulated simulate(
    int family, int device_mtu, int path_mtu, int probes_per_round,
    const std::function<bool(int, int)>& lost = [](int, int) { return false; }) {
  TargetSearch t;
  Simulated out;
  const int floor = search_floor(family, device_mtu);
  std::vector<int> sizes = first_round_sizes(family, device_mtu, probes_per_round);
  while (!sizes.empty() && out.rounds < 50) {
    ++out.rounds;
    out.largest_round = std::max(out.largest_round, sizes.size());
    for (int s : sizes) t.sending(s);
    // Answers arrive during the round, losses are known at its end (as in PathMtuProber).
    for (int s : sizes) {
      if (s <= path_mtu && !lost(s, out.rounds)) t.answered(s);
    }
    for (int s : sizes) {
      if (s > path_mtu || lost(s, out.rounds)) t.unanswered(s, false);
    }
    if (t.done(floor)) break;
    sizes = next_round_sizes(t, probes_per_round);
  }
  out.lo = t.lo;
  return out;
}

TEST(PathMtuSearch, FirstRoundV4SpansFloorToDeviceMtuEvenly) {
  const std::vector<int> sizes = first_round_sizes(AF_INET, 1500, 16);
  ASSERT_EQ(sizes.size(), 16u);
  EXPECT_EQ(sizes.front(), kSmallSize);
  EXPECT_EQ(sizes[1], 576);
  EXPECT_EQ(sizes.back(), 1500);
  EXPECT_TRUE(std::is_sorted(sizes.begin(), sizes.end()));
  for (size_t i = 2; i < sizes.size(); ++i) {
    const int gap = sizes[i] - sizes[i - 1];
    EXPECT_TRUE(gap == 66) << "between " << sizes[i - 1] << " and " << sizes[i];
  }
}

TEST(PathMtuSearch, FirstRoundV6StartsAt1280) {
  const std::vector<int> sizes = first_round_sizes(AF_INET6, 1500, 16);
  ASSERT_EQ(sizes.size(), 16u);
  EXPECT_EQ(sizes[0], kSmallSize);
  EXPECT_EQ(sizes[1], 1280);
  EXPECT_EQ(sizes.back(), 1500);
  for (size_t i = 2; i < sizes.size(); ++i) {
    EXPECT_LE(sizes[i] - sizes[i - 1], 16) << "so that round 2 can send every size of a gap";
  }
}

TEST(PathMtuSearch, FirstRoundNeverExceedsTheDeviceMtu) {
  for (int mtu : {68, 300, 576, 577, 1000, 1280, 1492, 9000}) {
    for (int family : {AF_INET, AF_INET6}) {
      const std::vector<int> sizes = first_round_sizes(family, mtu, 16);
      ASSERT_FALSE(sizes.empty()) << mtu;
      EXPECT_EQ(sizes.back(), mtu);
      EXPECT_LE(sizes.size(), 16u);
      EXPECT_GE(sizes.front(), smallest_probe(family));
      EXPECT_EQ(std::set<int>(sizes.begin(), sizes.end()).size(), sizes.size()) << "distinct";
    }
  }
}

TEST(PathMtuSearch, EvenlyBetweenStaysInsideAndTakesAllWhenFew) {
  EXPECT_EQ(evenly_between(1368, 1434, 3), (std::vector<int>{1384, 1401, 1417}));
  EXPECT_EQ(evenly_between(1399, 1403, 15), (std::vector<int>{1400, 1401, 1402}));
  EXPECT_TRUE(evenly_between(1400, 1401, 15).empty());
}

TEST(PathMtuSearch, NextRoundRetriesHiOnceAndFitsTheBudget) {
  TargetSearch t;
  for (int s : {128, 576, 1368}) t.answered(s);
  t.unanswered(1434, false);
  t.unanswered(1500, false);
  std::vector<int> round = next_round_sizes(t, 16);
  ASSERT_EQ(round.size(), 16u);
  EXPECT_EQ(round.back(), 1434) << "hi again, its failure may have been a loss";
  for (size_t i = 0; i + 1 < round.size(); ++i) {
    EXPECT_GT(round[i], 1368);
    EXPECT_LT(round[i], 1434);
  }
  for (int s : round) t.sending(s);
  t.unanswered(1434, false);
  round = next_round_sizes(t, 16);
  EXPECT_EQ(std::count(round.begin(), round.end(), 1434), 0) << "retried once only";
}

TEST(PathMtuSearch, LocallyRefusedSizeIsNotRetried) {
  TargetSearch t;
  t.answered(1400);
  t.unanswered(1500, true);
  const std::vector<int> round = next_round_sizes(t, 16);
  EXPECT_EQ(std::count(round.begin(), round.end(), 1500), 0);
  EXPECT_EQ(round.size(), 16u);
}

TEST(PathMtuSearch, FindsTheExactMtuInFewRounds) {
  Simulated v6 = simulate(AF_INET6, 1500, 1400, 16);
  EXPECT_EQ(v6.lo, 1400);
  EXPECT_EQ(v6.rounds, 2);
  Simulated v4 = simulate(AF_INET, 1500, 1400, 16);
  EXPECT_EQ(v4.lo, 1400);
  EXPECT_EQ(v4.rounds, 3) << "round 1's 66-byte gaps need two more rounds of 16";
  Simulated clean = simulate(AF_INET, 1500, 1500, 16);
  EXPECT_EQ(clean.lo, 1500);
  EXPECT_EQ(clean.rounds, 1) << "nothing failed: nothing more to learn";
}

TEST(PathMtuSearch, EveryPathMtuIsFoundAndTheSearchEnds) {
  for (int family : {AF_INET, AF_INET6}) {
    for (int n : {4, 5, 16, 64}) {
      for (int path = search_floor(family, 1500); path <= 1500; ++path) {
        Simulated s = simulate(family, 1500, path, n);
        ASSERT_EQ(s.lo, path) << "family " << family << " n " << n;
        ASSERT_LE(s.rounds, 12) << "family " << family << " n " << n << " path " << path;
        ASSERT_LE(s.largest_round, static_cast<size_t>(n));
      }
    }
  }
}

TEST(PathMtuSearch, OneLossOfHiIsRecovered) {
  // 1434 (round 1's hi for a 1450 path) lost once: its retry in round 2 answers.
  Simulated s =
      simulate(AF_INET, 1500, 1450, 16, [](int size, int round) { return size == 1434 && round == 1; });
  EXPECT_EQ(s.lo, 1450);
}

TEST(PathMtuSearch, TargetDroppingBigEchoesEndsAtItsLimit) {
  Simulated s = simulate(AF_INET, 1500, 1000, 16);
  EXPECT_EQ(s.lo, 1000);
  Simulated mute = simulate(AF_INET, 1500, 0, 16);
  EXPECT_EQ(mute.lo, 0);
  EXPECT_EQ(mute.rounds, 1);
  Simulated small_only = simulate(AF_INET, 1500, 300, 16);
  EXPECT_EQ(small_only.lo, kSmallSize) << "below the floor: not searched";
  EXPECT_EQ(small_only.rounds, 1);
}

TEST(PathMtuSearch, JudgeNeverReportsBelow1280) {
  Verdict none = judge({}, 1500);
  EXPECT_FALSE(none.mtu);
  EXPECT_EQ(none.note, "no target answered");

  Verdict low = judge({{"192.0.2.1", 1000}}, 1500);
  EXPECT_FALSE(low.mtu);
  EXPECT_NE(low.note.find("no echo above 1000 bytes"), std::string::npos) << low.note;

  Verdict best = judge({{"192.0.2.1", 1000}, {"198.51.100.1", 1400}}, 1500);
  ASSERT_TRUE(best.mtu);
  EXPECT_EQ(*best.mtu, 1400) << "the target that answers big echoes proves the path";
  EXPECT_EQ(best.note, "");

  EXPECT_EQ(judge({{"192.0.2.1", 1279}}, 1500).mtu, std::nullopt);
  EXPECT_EQ(judge({{"192.0.2.1", 1280}}, 1500).mtu, 1280);

  Verdict capped = judge({{"192.0.2.1", 1500}}, 1500);
  EXPECT_EQ(capped.mtu, 1500);
  EXPECT_EQ(capped.note, "") << "a path as wide as the device is the normal case, not worth a note";

  // A device smaller than 1280 (IPv4 only) is proven by a target that answers its full size.
  EXPECT_EQ(judge({{"192.0.2.1", 1000}}, 1000).mtu, 1000);
  EXPECT_EQ(judge({{"192.0.2.1", 900}}, 1000).mtu, std::nullopt);
}

}  // namespace
}  // namespace uplinkd::pmtu
