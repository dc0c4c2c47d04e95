int echo_common_stub(void){return 0;}
