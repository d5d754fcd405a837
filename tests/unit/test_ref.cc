// test_ref.cc - properties of the reference kernels on fresh random data (seed printed).
#include <gtest/gtest.h>

#include "test_util.h"
