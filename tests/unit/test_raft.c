#include "config.h"
#include "pm_test.h"
static Suite *s_(void){Suite *s=suite_create("x");return s;}
PM_TEST_MAIN(s_)
