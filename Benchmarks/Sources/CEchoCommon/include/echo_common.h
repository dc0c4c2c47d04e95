int echo_common_stub(void);
