#include <malloc.h>
#include "CTestSupport.h"

int cogen_test_mmap_threshold(int bytes) {
    return mallopt(M_MMAP_THRESHOLD, bytes);
}
