from infermode.cli import main

raise SystemExit(main())
