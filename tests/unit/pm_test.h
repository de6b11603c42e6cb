/*
 * pm_test: what every Check unit-test program shares. Each test file
 * builds its Suite and ends with PM_TEST_MAIN(its_suite_fn).
 */
#ifndef PM_TEST_H
#define PM_TEST_H

#include <check.h>
#include <stdlib.h>

/* Run the suite (forking per test, Check's default); exit status 0/1. */
static inline int
pm_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#define PM_TEST_MAIN(suite_fn)                                                 \
    int main(void)                                                             \
    {                                                                          \
        return pm_test_run(suite_fn());                                        \
    }

#endif
