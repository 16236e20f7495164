// The main() of every tests/unit-*.cpp executable: doctest's own, plus a guard that a run which
// executes no test case fails.
//
// Why: doctest_discover_tests makes one ctest entry per TEST_CASE and runs it as
// `unit-x --test-case=NAME`. A name that CMake mangles (a ';' splits it into two list items, two
// ctest entries) matches no case, doctest prints
// "test cases: 0" and exits 0, and ctest counts a pass for a test that never ran. So any run that
// is not a query (--list-test-cases, --count, --help, --version, --no-run ...) and starts no
// test case exits non-zero with a message naming the filter.
//
// Threading: doctest runs test cases on the main thread; the listener is only called from it.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

bool g_run_started = false;     // test_run_start is called only for a run, never for a query
unsigned g_cases_started = 0;  // test cases that passed the filters and were entered

struct RanSomethingListener : doctest::IReporter {
  explicit RanSomethingListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override { g_run_started = true; }
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++g_cases_started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("modelux_ran_something", 1, RanSomethingListener);

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;  // --help, --version, --list-test-cases, ...
  if (g_run_started && g_cases_started == 0) {
    std::string filters;
    for (int i = 1; i < argc; ++i) (filters += ' ') += argv[i];
    std::fprintf(stderr,
                 "\nmodelux test guard: FAILED: no test case ran (arguments:%s).\n"
                 "A ctest entry whose filter matches no TEST_CASE counts as a pass for a test that "
                 "never ran.\nCheck the name: a ';' in a TEST_CASE name splits its ctest entry "
                 "into two that match nothing.\n",
                 filters.empty() ? " none" : filters.c_str());
    return EXIT_FAILURE;
  }
  return rc;
}
