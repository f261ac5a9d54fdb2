/* logsum.h — `hikyaku log summary [-n TOP] FILE...` (logsum.c). */
#ifndef HK_OBS_LOGSUM_H
#define HK_OBS_LOGSUM_H

/* argv: the words after "summary". Prints the report; the exit status. */
int logsum_main(int argc, char **argv);

#endif
